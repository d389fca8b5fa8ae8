// The showcase as a new user meets it, in a real headless Chromium: the showcase runs as its own
// process on a fresh database (seeded at first start, as `./keel demo` is), every link on the
// index answers, every page opens without a script error, and the ledger, rate-limit and text CRDT
// pages work when used.
#include <keel/pg/local_cluster.hpp>

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <vector>

#include <support/browser.hpp>
#include <support/pg.hpp>
#include <support/result.hpp>
#include <support/showcase.hpp>
#include <unistd.h>

namespace {

// A database of its own for each showcase started, so each one is seeded as a new one.
std::string fresh_database(std::string_view purpose) {
  std::string database = keel::test::server_conninfo();
  if (auto* cluster = keel::test::cluster()) {
    static int made = 0;
    auto created = cluster->create_database("showcase_" + std::string(purpose) + "_" +
                                            std::to_string(::getpid()) + "_" + std::to_string(++made));
    REQUIRE(created);
    database = *created;
  }
  return database;
}

}  // namespace

TEST_SUITE("browser") {
  TEST_CASE("the index: every link answers, and every page opens without a script error") {
    keel::test::showcase_process showcase(fresh_database("index"));
    auto browser = keel::test::browser::launch();
    REQUIRE_MESSAGE(browser, "chromium did not start");
    REQUIRE_MESSAGE(browser->navigate(showcase.url + "/"), browser->last_error());
    // Fetched from the page itself, as a click would: same origin, same cookies.
    const auto answers = browser->evaluate(R"js((async () => {
        const out = [];
        for (const a of document.querySelectorAll("a[href]")) {
          const href = a.getAttribute("href");
          const r = await fetch(href);
          out.push(href + " " + r.status);
        }
        return out;
      })())js");
    REQUIRE_MESSAGE(answers, browser->last_error());
    REQUIRE(answers->as_array().size() >= 20);
    for (const auto& line : answers->as_array()) {
      const std::string text(line.as_string());
      CAPTURE(text);
      CHECK(text.ends_with(" 200"));
      CHECK(text.find('{') == std::string::npos);  // a pattern is not a link
    }
    for (const char* page :
         {"/ledger", "/events", "/tsdb", "/jobs", "/ratelimit", "/dsl", "/crdt", "/sync"}) {
      CAPTURE(page);
      REQUIRE_MESSAGE(browser->navigate(showcase.url + page), browser->last_error());
      // Each page reaches the data behind it.
      const auto loaded = browser->wait_for(
          "document.querySelector('#accounts tr[data-account], #streams tr[data-stream], #plot[data-ready], "
          "#queues tr[data-queue], #policies tr[data-policy], #graph g.role, body[data-ready], "
          "body[data-synced]') "
          "!== null",
          std::chrono::seconds(15));
      CHECK_MESSAGE(loaded, browser->last_error());
      // Every page leads to the others.
      CHECK(browser->evaluate("document.querySelectorAll('nav a[href]').length").value() == 10);
    }
    CHECK(browser->console_errors().empty());
  }

  TEST_CASE(
      "the ledger page: seeded balances in dollars, a transfer moves money, an overdraft is refused, the "
      "proof "
      "verifies") {
    keel::test::showcase_process showcase(fresh_database("ledger"));
    auto browser = keel::test::browser::launch();
    REQUIRE_MESSAGE(browser, "chromium did not start");
    REQUIRE_MESSAGE(browser->navigate(showcase.url + "/ledger"), browser->last_error());
    const auto balance = [&](std::string_view account) {
      return "document.querySelector('#accounts tr[data-account=\"" + std::string(account) +
             "\"] td.balance')?.textContent";
    };
    REQUIRE_MESSAGE(browser->wait_for(balance("1002") + " === '$2,457.50'"), browser->last_error());
    CHECK(browser->evaluate(balance("1003")).value() == "$1,242.50");
    CHECK(browser->evaluate(balance("1001")).value() == "-$3,700.00");
    REQUIRE(browser->wait_for(
        "document.querySelector('#checkpoint [data-field=\"proof\"]')?.dataset.verified === 'true'"));
    CHECK(browser->evaluate("document.querySelector('#checkpoint [data-field=\"tree_size\"]').textContent")
              .value() == "7");

    // alice pays bob 12.50 (the form's default).
    REQUIRE_MESSAGE(browser->click("#transfer button[type=submit]"), browser->last_error());
    REQUIRE_MESSAGE(browser->wait_for("document.getElementById('transfer-result').dataset.result === 'ok'"),
                    browser->last_error());
    CHECK(browser->wait_for(balance("1002") + " === '$2,445.00'"));
    CHECK(browser->wait_for(balance("1003") + " === '$1,255.00'"));
    // The new entry is in a new signed tree head, and its proof verifies too.
    CHECK(browser->wait_for(
        "document.querySelector('#checkpoint [data-field=\"tree_size\"]').textContent === '8' && "
        "document.querySelector('#checkpoint [data-field=\"proof\"]').dataset.verified === 'true'"));

    // More than alice holds: a result, nothing moves.
    REQUIRE(
        browser->evaluate("document.querySelector('#transfer input[name=amount]').value = '99999'; true"));
    REQUIRE(browser->click("#transfer button[type=submit]"));
    REQUIRE_MESSAGE(
        browser->wait_for("document.getElementById('transfer-result').dataset.result === 'exceeds_credits'"),
        browser->last_error());
    CHECK(browser->evaluate(balance("1002")).value() == "$2,445.00");
    CHECK(browser->console_errors().empty());
  }

  TEST_CASE("the access page: the shop's roles, and a tenant's query run under its policy") {
    keel::test::showcase_process showcase(fresh_database("dsl"));
    auto browser = keel::test::browser::launch();
    REQUIRE_MESSAGE(browser, "chromium did not start");
    REQUIRE_MESSAGE(browser->navigate(showcase.url + "/dsl"), browser->last_error());
    REQUIRE_MESSAGE(browser->wait_for("document.querySelectorAll('#graph g.role').length === 3"),
                    browser->last_error());
    REQUIRE(browser->click("#graph g.role[data-role=\"support\"]"));
    CHECK(
        browser->wait_for("document.querySelector('#grants tr[data-table=\"customers\"] .masked') !== null"));
    REQUIRE(browser->evaluate(
        "(() => { document.getElementById('role').value = 'tenant_user';"
        " document.getElementById('attr-tenant').value = '2';"
        " document.getElementById('query').value = 'from orders | group {status} (aggregate {n = "
        "count this}) | sort status'; return true; })()"));
    REQUIRE(browser->click("#run"));
    REQUIRE_MESSAGE(browser->wait_for("document.querySelectorAll('#result-rows tbody tr').length === 4"),
                    browser->last_error());
    // The tenant's 40 orders, counted through its policy.
    const auto total = browser->evaluate(
        "[...document.querySelectorAll('#result-rows tbody tr td:nth-child(2)')].reduce((s, td) => s + "
        "Number(td.textContent), 0)");
    REQUIRE(total);
    CHECK(total->to_number<double>() == 40);
    CHECK(browser->console_errors().empty());
  }

  TEST_CASE("the text CRDT page: two replicas edited apart converge when synced, undo is each one's own") {
    keel::test::showcase_process showcase(fresh_database("crdt"));
    auto browser = keel::test::browser::launch();
    REQUIRE_MESSAGE(browser, "chromium did not start");
    REQUIRE_MESSAGE(browser->navigate(showcase.url + "/crdt"), browser->last_error());
    REQUIRE_MESSAGE(browser->wait_for("document.body.dataset.ready === '1'"), browser->last_error());
    const auto text_of = [&](const char* name) {
      return browser->evaluate(std::string("document.getElementById('") + name + "').dataset.text").value();
    };
    CHECK(text_of("alice") == "Shopping: milk, eggs");
    CHECK(text_of("bob") == "Shopping: milk, eggs");
    // Each types in their own textarea, apart.
    const auto type = [&](const char* name, const char* text) {
      REQUIRE(browser->evaluate(std::string("{ const a = document.getElementById('") + name +
                                "'); a.focus(); a.value = '" + text +
                                "'; a.dispatchEvent(new Event('input')); true }"));
      REQUIRE_MESSAGE(browser->wait_for(std::string("document.getElementById('") + name +
                                        "').dataset.text === '" + text + "'"),
                      browser->last_error());
    };
    type("alice", "Shopping: milk, eggs, bread");
    type("bob", "Shopping: oat milk, eggs");
    REQUIRE(browser->click("[data-sync=\"alice\"]"));
    REQUIRE_MESSAGE(browser->wait_for("document.getElementById('bob').dataset.text.endsWith('bread')"),
                    browser->last_error());
    REQUIRE(browser->click("[data-sync=\"bob\"]"));
    REQUIRE_MESSAGE(browser->wait_for("document.getElementById('alice').dataset.text.includes('oat')"),
                    browser->last_error());
    CHECK(text_of("alice") == "Shopping: oat milk, eggs, bread");
    CHECK(text_of("bob") == "Shopping: oat milk, eggs, bread");
    // Alice's undo takes back her ", bread" and leaves bob's "oat ".
    REQUIRE(browser->click("[data-undo=\"alice\"]"));
    REQUIRE_MESSAGE(browser->wait_for("!document.getElementById('alice').dataset.text.includes('bread')"),
                    browser->last_error());
    CHECK(text_of("alice") == "Shopping: oat milk, eggs");
    // Yjs's updates merged by the codec: client 9's struct and client 7's nine.
    REQUIRE(browser->click("#yjs-merge"));
    REQUIRE_MESSAGE(browser->wait_for("document.getElementById('yjs-summary').dataset.structs !== undefined"),
                    browser->last_error());
    CHECK(browser->evaluate("document.getElementById('yjs-summary').dataset.structs").value() == "10");
    CHECK(
        browser->evaluate("document.getElementById('yjs-summary').textContent.includes('{\"7\":17,\"9\":1}')")
            .value() == true);
    CHECK(browser->console_errors().empty());
  }

  TEST_CASE(
      "the collaborative text page: two Chromium pages type into one Yjs document and see each other's "
      "cursor") {
    keel::test::showcase_process showcase(fresh_database("sync"));
    auto launched_ann = keel::test::browser::launch();
    auto bob = keel::test::browser::launch();
    REQUIRE_MESSAGE(launched_ann, "chromium did not start");
    REQUIRE_MESSAGE(bob, "chromium did not start");
    std::optional<keel::test::browser> ann(std::move(*launched_ann));
    const auto page = showcase.url + "/sync?room=shared-notes&name=";
    REQUIRE_MESSAGE(ann->navigate(page + "ann"), ann->last_error());
    REQUIRE_MESSAGE(bob->navigate(page + "bob"), bob->last_error());
    for (auto* b : {&*ann, &*bob})
      REQUIRE_MESSAGE(b->wait_for("document.body.dataset.synced === '1'"), b->last_error());
    const auto editor_is = [](keel::test::browser& b, const std::string& text) {
      REQUIRE_MESSAGE(b.wait_for("document.getElementById('editor').value === " +
                                 boost::json::serialize(boost::json::string(text))),
                      b.last_error());
    };
    const auto peer_at = [](keel::test::browser& b, const char* name, int index) {
      REQUIRE_MESSAGE(b.wait_for(std::string("document.querySelector('#peers [data-peer=\"") + name +
                                 "\"]')?.dataset.index === '" + std::to_string(index) + "'"),
                      b.last_error());
    };
    // Ann types (real key input into the focused textarea); Bob sees her text, and her cursor.
    REQUIRE(ann->click("#editor"));
    REQUIRE(ann->insert_text("hello from ann"));
    editor_is(*bob, "hello from ann");
    peer_at(*bob, "ann", 14);
    // Bob types in front of it: Ann sees it, her own cursor stays after her text (at 19 now), and
    // Bob's cursor is after his.
    REQUIRE(bob->click("#editor"));
    REQUIRE(bob->evaluate(
        "{ const e = document.getElementById('editor'); e.setSelectionRange(0, 0); e.dispatchEvent(new "
        "Event('select')); true }"));
    REQUIRE(bob->insert_text("bob: "));
    editor_is(*ann, "bob: hello from ann");
    peer_at(*ann, "bob", 5);
    peer_at(*bob, "ann", 19);
    CHECK(ann->evaluate("document.getElementById('editor').selectionStart").value() == 19);
    CHECK(bob->evaluate("document.getElementById('view').textContent").value() == "bob: hello from ann|ann");
    CHECK(ann->console_errors().empty());
    // Ann's browser goes away without a word: the server removes her cursor for Bob.
    ann.reset();
    REQUIRE_MESSAGE(bob->wait_for("document.querySelector('#peers [data-peer=\"ann\"]') === null"),
                    bob->last_error());
    CHECK(bob->console_errors().empty());
    // The room is kept in Postgres: a new page reads the same text.
    auto carl = keel::test::browser::launch();
    REQUIRE_MESSAGE(carl, "chromium did not start");
    REQUIRE_MESSAGE(carl->navigate(page + "carl"), carl->last_error());
    editor_is(*carl, "bob: hello from ann");
  }

  TEST_CASE("the rate-limit page: the policies in force, and a burst of 8 meeting the demo limit of 5") {
    keel::test::showcase_process showcase(fresh_database("ratelimit"));
    auto browser = keel::test::browser::launch();
    REQUIRE_MESSAGE(browser, "chromium did not start");
    REQUIRE_MESSAGE(browser->navigate(showcase.url + "/ratelimit"), browser->last_error());
    REQUIRE_MESSAGE(
        browser->wait_for("document.querySelector('#policies tr[data-policy=\"demo\"]') !== null"),
        browser->last_error());
    CHECK(browser
              ->evaluate(
                  "document.querySelector('#policies tr[data-policy=\"demo\"] td:nth-child(3)').textContent")
              .value() == "5 per 10 s, sliding log");
    REQUIRE(browser->click("#burst"));
    REQUIRE_MESSAGE(browser->wait_for("document.getElementById('summary').dataset.limited !== undefined"),
                    browser->last_error());
    CHECK(browser->evaluate("document.getElementById('summary').textContent").value() ==
          "5 allowed, 3 limited");
    const auto statuses = browser->evaluate(
        "Array.from(document.querySelectorAll('#requests tbody tr'), r => r.dataset.status).join(' ')");
    CHECK(statuses.value() == "200 200 200 200 200 429 429 429");
    // A limited answer says when to come back.
    CHECK(browser
              ->evaluate(
                  "document.querySelector('#requests tr[data-status=\"429\"] td:last-child').textContent")
              .value()
              .as_string()
              .ends_with(" s"));
    CHECK(browser->console_errors().empty());
  }
}
