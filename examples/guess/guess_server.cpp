// The guess demo: "guess the number", a dialogue written top to bottom as a Conversation (ask,
// wait for the answer, branch, ask again). The same binary serves one player per child under
// PreFork and thousands at once from one Multiplex process, where a win is announced to the
// other players of the process while they wait for their own next guess.

#include <unistd.h>

#include <charconv>
#include <random>

#include <netserver/netserver.hpp>

using netserver::Session;

namespace {

constexpr int highest = 100;

// The number typed, or 0 when the line is not a number from 1 to `highest`.
int parse_guess(std::string_view text) {
  text = netserver::trim(text);
  int value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  return error == std::errc() && end == text.data() + text.size() && value >= 1 && value <= highest ? value : 0;
}

class GuessGame : public netserver::Conversation {
 public:
  boost::asio::awaitable<void> process_request(Session& session) override {
    session.send_line(fmt::format("Welcome to \"guess\" (personality {}, pid {})", session.server().personality_name(),
                                  ::getpid()));
    const netserver::Duration answer_time = session.server().config().duration("answer_timeout");
    do {
      if (!co_await play_round(session, answer_time)) co_return;
      session.send_line("Play again? (yes/no)");
    } while (co_await yes(session, answer_time));
    session.send_line("Bye!");
  }

 private:
  // One round: false when the player left or was too slow.
  boost::asio::awaitable<bool> play_round(Session& session, netserver::Duration answer_time) {
    const int secret = std::uniform_int_distribution<int>(1, highest)(random_);
    session.send_line(fmt::format("I am thinking of a number from 1 to {}. Your guess?", highest));
    for (int tries = 1;; ++tries) {
      const auto line = co_await read_line(session, answer_time);
      if (!line) {
        if (timed_out(session)) session.send_line(fmt::format("Too slow! It was {}. Bye!", secret));
        co_return false;
      }
      const int guess = parse_guess(*line);
      if (guess == 0) {
        session.send_line(fmt::format("\"{}\" is not a number from 1 to {}. Your guess?", *line, highest));
      } else if (guess != secret) {
        session.send_line(fmt::format("{} is too {}. Your guess?", guess, guess < secret ? "low" : "high"));
      } else {
        session.send_line(fmt::format("Right! It was {}; you needed {} guesses.", secret, tries));
        if (session.server().config().boolean("announce_wins"))
          session.registry().broadcast(fmt::format("*** {} found {} in {} guesses\r\n", session.peer(), secret, tries),
                                       &session);
        co_return true;
      }
    }
  }

  boost::asio::awaitable<bool> yes(Session& session, netserver::Duration answer_time) {
    const auto line = co_await read_line(session, answer_time);
    co_return line && (netserver::trim(*line) == "yes" || netserver::trim(*line) == "y");
  }

  std::mt19937 random_{std::random_device{}()};
};

}  // namespace

int main(int argc, char** argv) {
  netserver::Server server("guess", std::make_shared<GuessGame>());
  server.options().add(netserver::Option::duration("answer_timeout", 60, 0.01, 86400, "seconds a player may think"));
  server.options().add(netserver::Option::flag("announce_wins", true, "tell the other players of this process about a win"));
  server.set_default("personality", std::string("multiplex"));
  return server.main(argc, argv);
}
