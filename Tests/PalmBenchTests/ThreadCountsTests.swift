// ThreadCountsTests: the one parser behind every `--thread-list` and the default thread set.

import Testing
import PalmBench

@Suite struct ThreadCountsTests {
  @Test func parsesCommaSeparatedPositiveIntegers() throws {
    #expect(try ThreadCounts.parse("1") == [1])
    #expect(try ThreadCounts.parse("1,2,4") == [1, 2, 4])
    #expect(try ThreadCounts.parse(" 1, 2 ") == [1, 2])
  }

  @Test(arguments: ["", "0", "-1", "a,b", "1,zero", "1,,2", "1,", ",1", "1.5"])
  func rejectsBadListsWithOneMessage(text: String) {
    let error = #expect(throws: ThreadCounts.ParseError.self) { try ThreadCounts.parse(text) }
    #expect(error?.text == text)
    #expect(error?.description.hasPrefix("--thread-list must be positive integers separated by commas") == true)
  }

  /// Counts above 4 × the cores (and beyond Int32, which trapped in Threads.count) are refused
  /// here, with the bound in the message, before any OpenMP team is made.
  @Test(arguments: ["\(ThreadCounts.maxThreads + 1)", "1,4611686018427387904", "100000"])
  func rejectsCountsAboveTheBound(text: String) throws {
    let error = #expect(throws: ThreadCounts.ParseError.self) { try ThreadCounts.parse(text) }
    #expect(error?.description.hasPrefix("--thread-list must be 1...\(ThreadCounts.maxThreads) (4 × the ") == true,
            "\(error?.description ?? "")")
    #expect(try ThreadCounts.parse("\(ThreadCounts.maxThreads)") == [ThreadCounts.maxThreads])
  }

  @Test func theDefaultIsOneAndTwoAtMostTheCores() {
    let s = ThreadCounts.standard
    #expect(s == [1, 2] || s == [1])
  }
}
