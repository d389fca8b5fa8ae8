# keel_add_component(<name>
#   SOURCES <files...>            compiled parts (src/<name>/...)
#   DEPENDS <keel::x...>          keel components this one builds on (linked publicly)
#   EXTERNAL <names...>           external packages, by keel_find_external() name
#   PUBLIC_LINK <targets...>      external targets that appear in the public headers
#   PRIVATE_LINK <targets...>)    external targets used only by the sources
#
# Creates keel_<name> with alias keel::<name> and export name <name>, and records what a
# consumer's find_package(keel COMPONENTS <name>) must load before the targets file.
function(keel_add_component name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "SOURCES;DEPENDS;EXTERNAL;PUBLIC_LINK;PRIVATE_LINK")
  set(target keel_${name})
  add_library(${target} ${arg_SOURCES})
  add_library(keel::${name} ALIAS ${target})
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${name} OUTPUT_NAME keel_${name})
  target_compile_features(${target} PUBLIC cxx_std_20)
  target_include_directories(${target} PUBLIC
    "$<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>"
    "$<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>")
  target_link_libraries(${target} PUBLIC ${arg_DEPENDS} ${arg_PUBLIC_LINK} PRIVATE ${arg_PRIVATE_LINK})
  keel_set_warnings(${target})

  foreach(ext IN LISTS arg_EXTERNAL)
    keel_find_external(${ext})
  endforeach()

  set(keel_deps "")
  foreach(dep IN LISTS arg_DEPENDS)
    string(REGEX REPLACE "^keel::" "" dep "${dep}")
    list(APPEND keel_deps ${dep})
  endforeach()
  set_property(GLOBAL APPEND PROPERTY KEEL_COMPONENTS ${name})
  set_property(GLOBAL PROPERTY KEEL_${name}_DEPENDS "${keel_deps}")
  set_property(GLOBAL PROPERTY KEEL_${name}_EXTERNAL "${arg_EXTERNAL}")
endfunction()

# keel_install_package(): install rules for every component plus keelConfig.cmake.
function(keel_install_package)
  include(CMakePackageConfigHelpers)
  set(config_dir "${CMAKE_INSTALL_LIBDIR}/cmake/keel")
  get_property(components GLOBAL PROPERTY KEEL_COMPONENTS)
  foreach(name IN LISTS components)
    install(TARGETS keel_${name} EXPORT keel-${name}-targets
      ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
      LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
      RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
    install(EXPORT keel-${name}-targets NAMESPACE keel:: DESTINATION ${config_dir})
    if(IS_DIRECTORY "${PROJECT_SOURCE_DIR}/include/keel/${name}")
      install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/keel/${name}" DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/keel)
    endif()
    if(EXISTS "${PROJECT_SOURCE_DIR}/include/keel/${name}.hpp")
      install(FILES "${PROJECT_SOURCE_DIR}/include/keel/${name}.hpp" DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/keel)
    endif()
    get_property(deps GLOBAL PROPERTY KEEL_${name}_DEPENDS)
    get_property(externals GLOBAL PROPERTY KEEL_${name}_EXTERNAL)
    file(GENERATE OUTPUT "${PROJECT_BINARY_DIR}/keel-${name}-meta.cmake" CONTENT
"set(keel_${name}_depends ${deps})
set(keel_${name}_external ${externals})
")
    install(FILES "${PROJECT_BINARY_DIR}/keel-${name}-meta.cmake" DESTINATION ${config_dir})
  endforeach()

  set(KEEL_COMPONENT_LIST "${components}")
  configure_package_config_file("${PROJECT_SOURCE_DIR}/cmake/keelConfig.cmake.in"
    "${PROJECT_BINARY_DIR}/keelConfig.cmake" INSTALL_DESTINATION ${config_dir})
  write_basic_package_version_file("${PROJECT_BINARY_DIR}/keelConfigVersion.cmake"
    COMPATIBILITY SameMinorVersion)
  install(FILES
    "${PROJECT_BINARY_DIR}/keelConfig.cmake"
    "${PROJECT_BINARY_DIR}/keelConfigVersion.cmake"
    "${PROJECT_SOURCE_DIR}/cmake/KeelDependencies.cmake"
    DESTINATION ${config_dir})
  install(FILES "${PROJECT_SOURCE_DIR}/LICENSE" DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/keel)
endfunction()
