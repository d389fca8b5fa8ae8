// A writer process for the multi-process tests (store_test.cpp starts it, drives it and kills it).
// Usage: keel_tsdb_test_writer <conninfo>. One command a line on stdin, one reply a line on
// stdout, so the test observes each step instead of waiting:
//   series <metric> <reject|last_write_wins|keep_both>  -> <id>
//   buffer <id> <t,t,...> <v,v,...>                      -> ok | error <errc value>
//   flush                                                -> ok | error <errc value>
//   rejected                                             -> <id> <t,t,...> | none
#include <keel/tsdb/store.hpp>

#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace tsdb = keel::tsdb;

template <class T>
std::vector<T> parse_list(const std::string& text) {
  std::vector<T> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(static_cast<T>(std::stod(item)));
  return out;
}

std::vector<std::int64_t> parse_times(const std::string& text) {
  std::vector<std::int64_t> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::stoll(item));
  return out;
}

std::string reply(const keel::result<void>& r) {
  return r ? "ok" : "error " + std::to_string(r.error().value());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: keel_tsdb_test_writer <conninfo>\n");
    return 2;
  }
  auto opened = tsdb::store::open(argv[1]);
  if (!opened) {
    std::fprintf(stderr, "cannot open the store: %s\n", opened.error().message().c_str());
    return 1;
  }
  auto& store = *opened;
  std::string line;
  while (std::getline(std::cin, line)) {
    std::stringstream in(line);
    std::string command;
    in >> command;
    std::string answer;
    if (command == "series") {
      std::string metric, policy;
      in >> metric >> policy;
      const auto ordering = policy == "keep_both"         ? tsdb::ordering::keep_both
                            : policy == "last_write_wins" ? tsdb::ordering::last_write_wins
                                                          : tsdb::ordering::reject;
      auto id = store.series(metric, {}, ordering);
      answer = id ? std::to_string(*id) : "error " + std::to_string(id.error().value());
    } else if (command == "buffer") {
      std::int64_t id = 0;
      std::string times, values;
      in >> id >> times >> values;
      answer = reply(store.buffer(id, parse_times(times), parse_list<double>(values)));
    } else if (command == "flush") {
      answer = reply(store.flush());
    } else if (command == "rejected") {
      const auto rejected = store.take_rejected();
      if (rejected.empty()) {
        answer = "none";
      } else {
        answer = std::to_string(rejected.front().series) + " ";
        for (std::size_t i = 0; i < rejected.front().times.size(); ++i)
          answer += (i == 0 ? "" : ",") + std::to_string(rejected.front().times[i]);
      }
    } else {
      answer = "unknown command " + command;
    }
    std::cout << answer << std::endl;
  }
  return 0;
}
