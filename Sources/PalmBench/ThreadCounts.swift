// Thread counts for the benchmarks: the default set and the comma-separated list the commands
// accept (`--thread-list 1,2,4`). One parser, one error message, for every command.

import Foundation

public enum ThreadCounts {
  /// The default set: 1 and 2 threads, at most the cores ([1] on a one-core machine).
  public static var standard: [Int] {
    ProcessInfo.processInfo.activeProcessorCount >= 2 ? [1, 2] : [1]
  }

  /// A list that is not positive integers separated by commas.
  public struct ParseError: Error, CustomStringConvertible, Equatable {
    public let option: String
    public let text: String
    public var description: String {
      "\(option) must be positive integers separated by commas, e.g. 1,2 (got \"\(text)\")"
    }
  }

  /// Parses "1,2,4" (spaces around items allowed). Empty items, zero, negatives and non-numbers
  /// are errors; `option` names the option in the message.
  public static func parse(_ text: String, option: String = "--thread-list") throws -> [Int] {
    try text.split(separator: ",", omittingEmptySubsequences: false).map {
      guard let t = Int($0.trimmingCharacters(in: .whitespaces)), t >= 1 else {
        throw ParseError(option: option, text: text)
      }
      return t
    }
  }
}
