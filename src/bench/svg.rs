//! A small line chart as SVG: one x axis (concurrency), several series.

use std::fmt::Write;

/// Where a panel goes on the canvas.
#[derive(Debug, Clone, Copy)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// One panel: title, y label, series; x values are shown as given (log2 spacing).
pub fn panel(out: &mut String, at: Rect, title: &str, ylabel: &str, series: &[Series<'_>]) {
    let Rect { x: x0, y: y0, w, h } = at;
    const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let ymax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let (xmin, xmax) = (
        xs.iter()
            .cloned()
            .fold(f64::INFINITY, f64::min)
            .max(1.0)
            .log2(),
        xs.iter().cloned().fold(1.0f64, f64::max).log2().max(1e-9),
    );
    let span = (xmax - xmin).max(1.0);
    let px = |x: f64| x0 + 50.0 + (x.max(1.0).log2() - xmin) / span * (w - 70.0);
    let py = |y: f64| y0 + h - 30.0 - y / ymax * (h - 60.0);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="14" font-weight="bold">{title}</text>"#,
        x0 + 50.0,
        y0 + 18.0
    );
    let _ = writeln!(
        out,
        r#"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="black"/>"#,
        x0 + 50.0,
        y0 + h - 30.0,
        x0 + w - 20.0
    );
    let _ = writeln!(
        out,
        r#"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="black"/>"#,
        x0 + 50.0,
        y0 + 30.0,
        y0 + h - 30.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="11" transform="rotate(-90 {} {})">{ylabel}</text>"#,
        x0 + 12.0,
        y0 + h / 2.0 + 30.0,
        x0 + 12.0,
        y0 + h / 2.0 + 30.0
    );
    for i in 0..=4 {
        let y = ymax / 1.1 * i as f64 / 4.0;
        let label = if ymax >= 20.0 {
            format!("{y:.0}")
        } else {
            format!("{y:.2}")
        };
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="10" text-anchor="end">{label}</text>"#,
            x0 + 46.0,
            py(y) + 3.0
        );
    }
    let mut seen = Vec::new();
    for &x in &xs {
        if !seen.contains(&(x as u64)) {
            seen.push(x as u64);
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" font-size="10" text-anchor="middle">{x}</text>"#,
                px(x),
                y0 + h - 16.0
            );
        }
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="10">concurrency</text>"#,
        x0 + w / 2.0,
        y0 + h - 3.0
    );
    for (i, s) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        for &(x, y) in &s.points {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                px(x),
                py(y)
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="11" fill="{c}">{}</text>"#,
            x0 + w - 150.0,
            y0 + 40.0 + 14.0 * i as f64,
            s.name
        );
    }
}
