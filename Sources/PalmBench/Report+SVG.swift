// Report+SVG: a hand-written SVG bar chart (no dependencies) of the MFU table: for each row an MFU
// bar and an HFU bar, a tick at the published MFU, a percentage axis, labels and a legend.
//
// The output is a standalone SVG 1.1 document (valid XML; text is escaped). Reference: the MFU
// table of PaLM Table 3 (MFUTable.swift).

extension MFUTable {
  /// The table as an SVG bar chart: per row an MFU bar (computed, or published for reference rows),
  /// an HFU bar where the row has one, and a black tick at the published MFU.
  public static func svg(_ rows: [Row]) -> String {
    let measured = rows.contains { if case .measured = $0 { return true } else { return false } }
    var chart = SVGBarChart(
      title: "MFU and HFU: PaLM Table 3 recomputed from published inputs" + (measured ? ", and runs measured here" : ""),
      series: [("MFU", "#4c72b0"), ("HFU", "#dd8452")])
    for row in rows {
      chart.groups.append(SVGBarChart.Group(
        label: row.label, values: [row.plottedMFU, row.plottedHFU], marker: row.publishedMFU,
        italic: { if case .reference = row { return true } else { return false } }()))
    }
    return chart.render()
  }
}

/// Horizontal grouped bars of fractions (0...1) drawn as percentages.
struct SVGBarChart {
  struct Group {
    var label: String
    /// One value per series; nil draws no bar.
    var values: [Double?]
    /// A reference value drawn as a tick ("published").
    var marker: Double?
    var italic: Bool
  }

  var title: String
  var series: [(name: String, color: String)]
  var groups: [Group] = []

  let width = 860.0
  let labelWidth = 300.0
  let plotWidth = 440.0
  let barHeight = 13.0
  let barGap = 2.0
  let groupGap = 12.0
  let top = 70.0

  func render() -> String {
    let barsPerGroup = Double(series.count)
    let groupHeight = barsPerGroup * barHeight + (barsPerGroup - 1) * barGap + groupGap
    let plotHeight = max(groupHeight, Double(groups.count) * groupHeight)
    let height = top + plotHeight + 50
    let x0 = labelWidth
    let largest = groups.flatMap { $0.values.compactMap { $0 } + [$0.marker].compactMap { $0 } }.max() ?? 0
    // Axis to the next 10% above the largest value (at least 10%, at most 200%: a disturbed run
    // can report absurd utilizations; its bar is clipped, its label still says the value).
    let tenths = max(1, Int((min(largest, 2) * 10).rounded(.up)))
    let axisMax = Double(tenths) / 10
    func x(_ v: Double) -> Double { x0 + plotWidth * min(max(v, 0), axisMax) / axisMax }

    var s = """
      <?xml version="1.0" encoding="UTF-8"?>
      <svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="\(n(width))" height="\(n(height))" \
      viewBox="0 0 \(n(width)) \(n(height))" font-family="Helvetica, Arial, sans-serif" font-size="12">
      <title>\(xmlEscape(title))</title>
      <rect x="0" y="0" width="\(n(width))" height="\(n(height))" fill="#ffffff"/>
      <text x="\(n(width / 2))" y="24" text-anchor="middle" font-size="15" font-weight="bold">\(xmlEscape(title))</text>

      """
    // Legend.
    var lx = x0
    for item in series {
      s += "<rect x=\"\(n(lx))\" y=\"36\" width=\"14\" height=\"10\" fill=\"\(item.color)\"/>"
      s += "<text x=\"\(n(lx + 18))\" y=\"45\">\(xmlEscape(item.name))</text>\n"
      lx += 70
    }
    s += "<line x1=\"\(n(lx + 7))\" y1=\"34\" x2=\"\(n(lx + 7))\" y2=\"48\" stroke=\"#000000\" stroke-width=\"2\"/>"
    s += "<text x=\"\(n(lx + 14))\" y=\"45\">published MFU</text>\n"

    // Grid and axis.
    let axisY = top + plotHeight
    for t in 0...tenths {
      let tick = Double(t) / 10
      let tx = x(tick)
      s += "<line x1=\"\(n(tx))\" y1=\"\(n(top - 4))\" x2=\"\(n(tx))\" y2=\"\(n(axisY))\" stroke=\"#dddddd\"/>"
      s += "<text x=\"\(n(tx))\" y=\"\(n(axisY + 16))\" text-anchor=\"middle\">\(fixed(tick * 100, 0))%</text>\n"
    }
    s += "<line x1=\"\(n(x0))\" y1=\"\(n(axisY))\" x2=\"\(n(x0 + plotWidth))\" y2=\"\(n(axisY))\" stroke=\"#000000\"/>"
    s += "<line x1=\"\(n(x0))\" y1=\"\(n(top - 4))\" x2=\"\(n(x0))\" y2=\"\(n(axisY))\" stroke=\"#000000\"/>\n"
    s += "<text x=\"\(n(x0 + plotWidth / 2))\" y=\"\(n(axisY + 36))\" text-anchor=\"middle\">"
      + "utilization of peak FLOP/s</text>\n"

    // Bars.
    for (g, group) in groups.enumerated() {
      let gy = top + Double(g) * groupHeight
      let mid = gy + (groupHeight - groupGap) / 2
      let style = group.italic ? " font-style=\"italic\"" : ""
      s += "<text x=\"\(n(x0 - 8))\" y=\"\(n(mid + 4))\" text-anchor=\"end\"\(style)>\(xmlEscape(group.label))</text>\n"
      for (i, value) in group.values.enumerated() {
        guard let value, i < series.count else { continue }
        let by = gy + Double(i) * (barHeight + barGap)
        s += "<rect x=\"\(n(x0))\" y=\"\(n(by))\" width=\"\(n(x(value) - x0))\" height=\"\(n(barHeight))\" "
          + "fill=\"\(series[i].color)\"><title>\(xmlEscape(series[i].name)) \(pct(value, 1))</title></rect>"
        // The label starts after the bar and, on the first bar, after the published tick; a
        // published value that differs from the bar by more than 0.1 point is named.
        var end = x(value)
        var label = "\(series[i].name) \(pct(value, 1))"
        if i == 0, let marker = group.marker {
          end = max(end, x(marker))
          if abs(marker - value) > MFUTable.reproductionTolerance { label += " (published \(pct(marker, 1)))" }
        }
        s += "<text x=\"\(n(end + 4))\" y=\"\(n(by + barHeight - 2))\" font-size=\"11\">"
          + "\(xmlEscape(label))</text>\n"
      }
      if let marker = group.marker {
        s += "<line x1=\"\(n(x(marker)))\" y1=\"\(n(gy - 2))\" x2=\"\(n(x(marker)))\" y2=\"\(n(gy + barHeight + 2))\" "
          + "stroke=\"#000000\" stroke-width=\"2\"><title>published MFU \(pct(marker, 1))</title></line>\n"
      }
    }
    s += "</svg>\n"
    return s
  }

  /// Coordinates with one decimal.
  private func n(_ v: Double) -> String { fixed(v, 1) }
}

/// Escapes text for XML content and attribute values.
func xmlEscape(_ text: String) -> String {
  var out = ""
  for c in text {
    switch c {
    case "&": out += "&amp;"
    case "<": out += "&lt;"
    case ">": out += "&gt;"
    case "\"": out += "&quot;"
    case "'": out += "&apos;"
    default: out.append(c)
    }
  }
  return out
}
