//! Minimal inline SVG line charts: axes with a few ticks, one polyline per series, an optional
//! horizontal limit line (max_connections), and a legend. Pure string building.

use std::fmt::Write as _;

const W: f64 = 560.0;
const H: f64 = 220.0;
const L: f64 = 48.0;
const R: f64 = 12.0;
const T: f64 = 36.0;
const B: f64 = 28.0;

/// One line of a chart: label, colour, points (seconds, value).
pub type Series<'a> = (&'a str, &'a str, &'a [(f64, f64)]);

/// A chart of `series` over `0..x_max` seconds.
pub fn chart(title: &str, x_max: f64, series: &[Series<'_>], limit: Option<(f64, &str)>) -> String {
    let data_max = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|&(_, y)| y))
        .chain(limit.map(|(y, _)| y))
        .fold(0.0f64, f64::max);
    let y_max = nice(data_max.max(1.0) * 1.1);
    let px = |x: f64| L + (x / x_max.max(1e-9)).clamp(0.0, 1.0) * (W - L - R);
    let py = |y: f64| H - B - (y / y_max).clamp(0.0, 1.0) * (H - T - B);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"10\">\
         <text x=\"{L}\" y=\"14\" font-size=\"12\" font-weight=\"600\">{}</text>",
        crate::report::escape(title)
    );
    for i in 0..=4 {
        let y = y_max * f64::from(i) / 4.0;
        let _ = write!(
            s,
            "<line x1=\"{L}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#e3e3e3\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - R, py(y), py(y), L - 4.0, py(y) + 3.0, label(y)
        );
    }
    let step = nice(x_max / 6.0).max(1.0);
    for i in 0..=((x_max / step).floor() as u32) {
        let x = step * f64::from(i);
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.0}s</text>",
            px(x),
            H - B + 14.0,
            x
        );
    }
    let _ = write!(
        s,
        "<line x1=\"{L}\" x2=\"{L}\" y1=\"{T}\" y2=\"{:.1}\" stroke=\"#888\"/>",
        H - B
    );
    if let Some((y, name)) = limit {
        let _ = write!(
            s,
            "<line x1=\"{L}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#b00020\" stroke-dasharray=\"5,3\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#b00020\">{} {}</text>",
            W - R, py(y), py(y), W - R, py(y) - 3.0, crate::report::escape(name), label(y)
        );
    }
    let mut lx = L;
    for (name, colour, points) in series {
        if !points.is_empty() {
            let pts: Vec<String> = points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = write!(
                s,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
                pts.join(" ")
            );
        }
        let _ = write!(
            s,
            "<rect x=\"{lx:.1}\" y=\"20\" width=\"10\" height=\"10\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"29\">{}</text>",
            lx + 13.0, crate::report::escape(name)
        );
        lx += 20.0 + 6.0 * name.len() as f64;
    }
    s.push_str("</svg>\n");
    s
}

/// The next "round" number at or above `v` (1, 2, 2.5, 5 times a power of ten).
fn nice(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

fn label(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.fract() == 0.0 || v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chart_has_polyline_and_limit() {
        let pts = [(0.5, 3.0), (1.5, 8.0)];
        let svg = super::chart(
            "t",
            2.0,
            &[("a", "#000", &pts)],
            Some((10.0, "max_connections")),
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("<polyline"));
        assert!(svg.contains("max_connections 10"));
        assert_eq!(super::nice(7.3), 10.0);
        assert_eq!(super::nice(130.0), 200.0);
    }
}
