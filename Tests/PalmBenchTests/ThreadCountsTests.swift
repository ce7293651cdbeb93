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

  @Test func theDefaultIsOneAndTwoAtMostTheCores() {
    let s = ThreadCounts.standard
    #expect(s == [1, 2] || s == [1])
  }
}
