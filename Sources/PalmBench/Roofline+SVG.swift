// Roofline+SVG: a hand-written SVG roofline chart (no dependencies): log-log axes (FLOP/byte
// against GFLOP/s), the memory roof (bandwidth × intensity) and the compute roof (peak), one point
// per kernel result, labelled. Standalone SVG 1.1 (text escaped). Reference: Williams et al. 2009.

import Foundation

extension Roofline {
  /// One labelled point of the chart.
  public struct Point: Sendable {
    public var label: String
    public var intensity: Double
    public var gflops: Double
    public init(label: String, intensity: Double, gflops: Double) {
      self.label = label
      self.intensity = intensity
      self.gflops = gflops
    }
  }

  /// The roofline chart: roofs of `self`, one dot per point (non-positive values are skipped).
  public func svg(_ points: [Point], title: String) -> String {
    let width = 820.0, height = 560.0
    let left = 80.0, right = 240.0, top = 50.0, bottom = 60.0
    let pw = width - left - right, ph = height - top - bottom
    let usable = points.filter { $0.intensity > 0 && $0.gflops > 0 && $0.intensity.isFinite && $0.gflops.isFinite }
    // Axis ranges in whole decades that hold the points, the ridge and the peak.
    let xs = usable.map(\.intensity) + [ridge]
    let ys = usable.map(\.gflops) + [peakGFLOPs, bandwidthGBs * (xs.min() ?? 1)]
    let x0 = floor(log10(xs.min()!)) , x1 = max(ceil(log10(xs.max()!)), x0 + 1)
    let y0 = floor(log10(max(ys.min()!, 1e-3))), y1 = max(ceil(log10(ys.max()! * 1.5)), y0 + 1)
    func px(_ i: Double) -> Double { left + pw * (log10(i) - x0) / (x1 - x0) }
    func py(_ g: Double) -> Double { top + ph * (1 - (log10(g) - y0) / (y1 - y0)) }
    func f(_ v: Double) -> String { fixed(v, 1) }

    var s = """
      <?xml version="1.0" encoding="UTF-8"?>
      <svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="\(f(width))" height="\(f(height))" \
      viewBox="0 0 \(f(width)) \(f(height))" font-family="Helvetica, Arial, sans-serif" font-size="12">
      <title>\(xmlEscape(title))</title>
      <rect x="0" y="0" width="\(f(width))" height="\(f(height))" fill="#ffffff"/>
      <text x="\(f(left + pw / 2))" y="26" text-anchor="middle" font-size="15" font-weight="bold">\(xmlEscape(title))</text>

      """
    // Decade grid and labels.
    for e in Int(x0)...Int(x1) {
      let x = px(pow(10, Double(e)))
      s += "<line x1=\"\(f(x))\" y1=\"\(f(top))\" x2=\"\(f(x))\" y2=\"\(f(top + ph))\" stroke=\"#e0e0e0\"/>"
      s += "<text x=\"\(f(x))\" y=\"\(f(top + ph + 16))\" text-anchor=\"middle\">\(decade(e))</text>\n"
    }
    for e in Int(y0)...Int(y1) {
      let y = py(pow(10, Double(e)))
      s += "<line x1=\"\(f(left))\" y1=\"\(f(y))\" x2=\"\(f(left + pw))\" y2=\"\(f(y))\" stroke=\"#e0e0e0\"/>"
      s += "<text x=\"\(f(left - 6))\" y=\"\(f(y + 4))\" text-anchor=\"end\">\(decade(e))</text>\n"
    }
    s += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(pw))\" height=\"\(f(ph))\" fill=\"none\" stroke=\"#000000\"/>\n"
    s += "<text x=\"\(f(left + pw / 2))\" y=\"\(f(height - 18))\" text-anchor=\"middle\">arithmetic intensity (FLOP/byte)</text>\n"
    s += "<text x=\"20\" y=\"\(f(top + ph / 2))\" text-anchor=\"middle\" transform=\"rotate(-90 20 \(f(top + ph / 2)))\">GFLOP/s</text>\n"

    // Roofs: memory from the left edge to the ridge, compute from the ridge to the right edge.
    let xl = pow(10, x0), xr = pow(10, x1)
    let memStart = max(xl, pow(10, y0) / bandwidthGBs)
    s += "<polyline fill=\"none\" stroke=\"#c44e52\" stroke-width=\"2\" points=\""
      + "\(f(px(memStart))),\(f(py(memStart * bandwidthGBs))) \(f(px(ridge))),\(f(py(peakGFLOPs))) "
      + "\(f(px(xr))),\(f(py(peakGFLOPs)))\"/>\n"
    s += "<text x=\"\(f(px(xr) - 4))\" y=\"\(f(py(peakGFLOPs) - 6))\" text-anchor=\"end\" fill=\"#c44e52\">"
      + "peak \(fixed(peakGFLOPs, 0)) GFLOP/s</text>\n"
    s += "<text x=\"\(f(px(memStart) + 6))\" y=\"\(f(py(memStart * bandwidthGBs) - 8))\" fill=\"#c44e52\">"
      + "\(fixed(bandwidthGBs, 1)) GB/s</text>\n"

    // Points and a legend (numbers beside the dots, names on the right).
    let palette = ["#4c72b0", "#55a868", "#8172b2", "#ccb974", "#64b5cd", "#dd8452", "#937860", "#da8bc3", "#8c8c8c", "#000000"]
    for (i, p) in usable.enumerated() {
      let color = palette[i % palette.count]
      let cx = px(p.intensity), cy = py(p.gflops)
      s += "<circle cx=\"\(f(cx))\" cy=\"\(f(cy))\" r=\"4\" fill=\"\(color)\"><title>\(xmlEscape(p.label)): "
        + "\(fixed(p.intensity, 3)) FLOP/B, \(fixed(p.gflops, 2)) GFLOP/s</title></circle>"
      s += "<text x=\"\(f(cx + 6))\" y=\"\(f(cy - 4))\" font-size=\"10\">\(i + 1)</text>\n"
      let ly = top + 14 * Double(i)
      s += "<circle cx=\"\(f(left + pw + 16))\" cy=\"\(f(ly))\" r=\"4\" fill=\"\(color)\"/>"
      s += "<text x=\"\(f(left + pw + 26))\" y=\"\(f(ly + 4))\" font-size=\"10\">\(i + 1). \(xmlEscape(p.label))</text>\n"
    }
    s += "</svg>\n"
    return s
  }

  /// 10^e as "0.01", "1", "1000".
  private func decade(_ e: Int) -> String {
    e >= 0 ? "1" + String(repeating: "0", count: e) : "0." + String(repeating: "0", count: -e - 1) + "1"
  }
}
