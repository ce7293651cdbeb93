// Thread counts for the benchmarks: the default set, the bound every thread option shares and the
// comma-separated list the commands accept (`--thread-list 1,2,4`). One parser, one error message,
// for every command.

import Foundation

public enum ThreadCounts {
  /// The default set: 1 and 2 threads, at most the cores ([1] on a one-core machine).
  public static var standard: [Int] {
    ProcessInfo.processInfo.activeProcessorCount >= 2 ? [1, 2] : [1]
  }

  /// The most threads any option accepts: 4 × the cores (more only queue behind each other, and
  /// OpenMP aborts on team sizes far beyond the machine).
  public static var maxThreads: Int { 4 * ProcessInfo.processInfo.activeProcessorCount }

  /// What an option holding `count` threads must be: nil when it is in 1...maxThreads, else the
  /// error message, e.g. "--threads must be 1...8 (4 × the 2 cores; got 9)".
  public static func problem(_ count: Int, option: String) -> String? {
    (1...maxThreads).contains(count) ? nil
      : "\(option) must be 1...\(maxThreads) (4 × the \(ProcessInfo.processInfo.activeProcessorCount) cores; got \(count))"
  }

  /// A list that is not positive integers separated by commas, or holds a count above maxThreads.
  public struct ParseError: Error, CustomStringConvertible, Equatable {
    public let option: String
    public let text: String
    /// The count above maxThreads, if that is what is wrong.
    public var tooLarge: Int? = nil
    public var description: String {
      if let t = tooLarge { return problem(t, option: option)! }
      return "\(option) must be positive integers separated by commas, e.g. 1,2 (got \"\(text)\")"
    }
  }

  /// Parses "1,2,4" (spaces around items allowed). Empty items, zero, negatives, non-numbers and
  /// counts above maxThreads are errors; `option` names the option in the message.
  public static func parse(_ text: String, option: String = "--thread-list") throws -> [Int] {
    try text.split(separator: ",", omittingEmptySubsequences: false).map {
      guard let t = Int($0.trimmingCharacters(in: .whitespaces)), t >= 1 else {
        throw ParseError(option: option, text: text)
      }
      if t > maxThreads { throw ParseError(option: option, text: text, tooLarge: t) }
      return t
    }
  }
}
