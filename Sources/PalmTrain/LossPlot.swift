// LossPlot: a hand-written SVG (no dependencies) of a run's loss curves: two panels, loss against
// training tokens and against wall-clock seconds, each with the training cross-entropy (per update)
// and the validation cross-entropy (per evaluation), in nats per byte. Spikes (rejected updates)
// are marked with red crosses. Standalone SVG 1.1, text escaped.

import Foundation

/// Draws metrics records as an SVG loss plot.
public enum LossPlot {
  /// One series of (x, y) points.
  struct Series {
    var name: String
    var color: String
    var points: [(Double, Double)]
    var markers: Bool
  }

  /// The SVG document for `records` (records of type "step", "spike" and "end"), titled `title`.
  public static func svg(_ records: [MetricsRecord], title: String) -> String {
    let steps = records.filter { $0.type == "step" }
    let train = steps.compactMap { r in r.crossEntropy.flatMap { $0.isFinite ? (r, $0) : nil } }
    let vals = records.filter { ($0.type == "step" || $0.type == "end") && $0.valLoss?.isFinite == true }
    let spikes = records.filter { $0.type == "spike" }
    let width = 960.0, height = 420.0
    var out = """
      <?xml version="1.0" encoding="UTF-8"?>
      <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
      <rect width="100%" height="100%" fill="white"/>
      <text x="\(width / 2)" y="22" text-anchor="middle" font-size="15">\(escape(title))</text>

      """
    let panels: [(String, (MetricsRecord) -> Double, Double)] = [
      ("training tokens", { Double($0.tokens) }, 0), ("seconds", { $0.seconds }, width / 2),
    ]
    for (xlabel, xOf, x0) in panels {
      let series = [
        Series(name: "train", color: "#4c72b0", points: train.map { (xOf($0.0), $0.1) }, markers: false),
        Series(name: "validation", color: "#dd8452", points: vals.map { (xOf($0), $0.valLoss!) }, markers: true),
        Series(name: "spike", color: "#c00000",
               points: spikes.map { (xOf($0), $0.loss.flatMap { $0.isFinite ? $0 : nil } ?? .nan) }, markers: true),
      ]
      out += panel(series, xlabel: xlabel, x0: x0, y0: 40, w: width / 2, h: height - 40)
    }
    out += "</svg>\n"
    return out
  }

  static func panel(_ series: [Series], xlabel: String, x0: Double, y0: Double, w: Double, h: Double) -> String {
    let left = x0 + 60, right = x0 + w - 20, top = y0 + 10, bottom = y0 + h - 60
    let all = series.flatMap { $0.points }.filter { $0.0.isFinite && $0.1.isFinite }
    var xmin = all.map(\.0).min() ?? 0, xmax = all.map(\.0).max() ?? 1
    var ymin = all.map(\.1).min() ?? 0, ymax = all.map(\.1).max() ?? 1
    xmin = min(xmin, 0)
    if xmax <= xmin { xmax = xmin + 1 }
    if ymax <= ymin { ymax = ymin + 1 }
    let pad = (ymax - ymin) * 0.05
    ymin -= pad; ymax += pad
    func px(_ x: Double) -> Double { left + (x - xmin) / (xmax - xmin) * (right - left) }
    func py(_ y: Double) -> Double { bottom - (y - ymin) / (ymax - ymin) * (bottom - top) }
    var s = "<g>\n<rect x=\"\(left)\" y=\"\(top)\" width=\"\(right - left)\" height=\"\(bottom - top)\" fill=\"none\" stroke=\"#888\"/>\n"
    for i in 0...5 {
      let fy = ymin + (ymax - ymin) * Double(i) / 5, fx = xmin + (xmax - xmin) * Double(i) / 5
      s += "<line x1=\"\(left)\" x2=\"\(right)\" y1=\"\(f(py(fy)))\" y2=\"\(f(py(fy)))\" stroke=\"#eee\"/>\n"
      s += "<text x=\"\(left - 6)\" y=\"\(f(py(fy) + 4))\" text-anchor=\"end\">\(label(fy))</text>\n"
      s += "<text x=\"\(f(px(fx)))\" y=\"\(bottom + 16)\" text-anchor=\"middle\">\(label(fx))</text>\n"
    }
    s += "<text x=\"\((left + right) / 2)\" y=\"\(bottom + 34)\" text-anchor=\"middle\">\(escape(xlabel))</text>\n"
    s += "<text transform=\"translate(\(x0 + 16),\((top + bottom) / 2)) rotate(-90)\" text-anchor=\"middle\">loss (nats/byte)</text>\n"
    for (i, ser) in series.enumerated() {
      let pts = ser.points.filter { $0.0.isFinite && $0.1.isFinite }
      if !ser.markers && pts.count > 1 {
        s += "<polyline fill=\"none\" stroke=\"\(ser.color)\" stroke-width=\"1.2\" points=\""
        s += pts.map { "\(f(px($0.0))),\(f(py($0.1)))" }.joined(separator: " ") + "\"/>\n"
      } else if ser.name == "spike" {
        for p in ser.points where p.0.isFinite {
          let x = px(p.0), y = p.1.isFinite ? py(p.1) : top + 6
          s += "<path d=\"M\(f(x - 4)),\(f(y - 4))L\(f(x + 4)),\(f(y + 4))M\(f(x - 4)),\(f(y + 4))L\(f(x + 4)),\(f(y - 4))\" stroke=\"\(ser.color)\" stroke-width=\"2\"/>\n"
        }
      } else {
        if pts.count > 1 {
          s += "<polyline fill=\"none\" stroke=\"\(ser.color)\" stroke-width=\"1.5\" points=\""
          s += pts.map { "\(f(px($0.0))),\(f(py($0.1)))" }.joined(separator: " ") + "\"/>\n"
        }
        for p in pts { s += "<circle cx=\"\(f(px(p.0)))\" cy=\"\(f(py(p.1)))\" r=\"3\" fill=\"\(ser.color)\"/>\n" }
      }
      let ly = top + 14 + Double(i) * 16
      s += "<rect x=\"\(right - 110)\" y=\"\(ly - 9)\" width=\"10\" height=\"10\" fill=\"\(ser.color)\"/>"
      s += "<text x=\"\(right - 95)\" y=\"\(ly)\">\(escape(ser.name))</text>\n"
    }
    return s + "</g>\n"
  }

  static func f(_ x: Double) -> String { String(Double(Int((x * 10).rounded())) / 10) }

  static func label(_ v: Double) -> String {
    let a = abs(v)
    if a >= 1e6 { return String(Double(Int((v / 1e5).rounded())) / 10) + "M" }
    if a >= 1e3 { return String(Double(Int((v / 1e2).rounded())) / 10) + "k" }
    return String(Double(Int((v * 100).rounded())) / 100)
  }

  static func escape(_ s: String) -> String {
    s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
      .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
  }
}
