//! Charts drawn on the server as SVG: a bar chart of one series over time buckets, with axis
//! labels and an accessible name and description that summarise the numbers. Pages pair a
//! chart with a visually hidden table of the same numbers for screen readers.

use std::fmt::Write as _;

/// The drawing's size in user units; the SVG scales to its container's width.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 260.0;
/// Room for the axis labels.
const LEFT: f64 = 52.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 40.0;
/// Horizontal gridlines (and value labels) drawn besides the baseline.
const TICKS: u64 = 4;
/// At most this many bucket labels under the bars (every n-th one when there are more).
const MAX_X_LABELS: usize = 8;

/// One bar: its bucket's label and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bar {
    pub label: String,
    pub value: u64,
}

/// A bar chart of `bars` as an SVG element. `title` names it (the accessible name); the
/// description summarises the series (total, largest bucket, range).
pub(crate) fn bar_chart(title: &str, unit: &str, bars: &[Bar]) -> String {
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0);
    let scale_max = nice_ceiling(max);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let mut svg = String::with_capacity(4096);
    let _ = write!(
        svg,
        "<svg class=\"chart\" role=\"img\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         preserveAspectRatio=\"xMidYMid meet\" aria-labelledby=\"chart-title chart-desc\">\
         <title id=\"chart-title\">{}</title><desc id=\"chart-desc\">{}</desc>",
        escape(title),
        escape(&describe(unit, bars)),
    );
    // Gridlines with their values.
    for tick in 0..=TICKS {
        let value = scale_max * tick / TICKS;
        let y = TOP + plot_h - plot_h * tick as f64 / TICKS as f64;
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{x2}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"axis\" x=\"{lx}\" y=\"{ty:.1}\" text-anchor=\"end\">{value}</text>",
            x2 = WIDTH - RIGHT,
            lx = LEFT - 6.0,
            ty = y + 4.0,
        );
    }
    if !bars.is_empty() {
        let slot = plot_w / bars.len() as f64;
        let bar_w = (slot * 0.8).max(1.0);
        let every = bars.len().div_ceil(MAX_X_LABELS);
        for (i, bar) in bars.iter().enumerate() {
            let h = if scale_max == 0 {
                0.0
            } else {
                plot_h * bar.value as f64 / scale_max as f64
            };
            let x = LEFT + slot * i as f64 + (slot - bar_w) / 2.0;
            let y = TOP + plot_h - h;
            let _ = write!(
                svg,
                "<rect class=\"bar\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\">\
                 <title>{}: {} {}</title></rect>",
                escape(&bar.label),
                bar.value,
                escape(unit),
            );
            if i % every == 0 {
                let _ = write!(
                    svg,
                    "<text class=\"axis\" x=\"{cx:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\">{}</text>",
                    escape(&bar.label),
                    cx = LEFT + slot * i as f64 + slot / 2.0,
                    ly = HEIGHT - BOTTOM + 18.0,
                );
            }
        }
    }
    let _ = write!(
        svg,
        "<line class=\"baseline\" x1=\"{LEFT}\" x2=\"{x2}\" y1=\"{y}\" y2=\"{y}\"/></svg>",
        x2 = WIDTH - RIGHT,
        y = TOP + plot_h,
    );
    svg
}

/// A sentence about the series: its range, total and largest bucket.
fn describe(unit: &str, bars: &[Bar]) -> String {
    let (Some(first), Some(last)) = (bars.first(), bars.last()) else {
        return format!("No {unit} in this range.");
    };
    let total: u64 = bars.iter().map(|b| b.value).sum();
    let peak = bars
        .iter()
        .max_by_key(|b| b.value)
        .expect("a non-empty series");
    format!(
        "{total} {unit} from {} to {} in {} buckets; the most, {}, on {}.",
        first.label,
        last.label,
        bars.len(),
        peak.value,
        peak.label,
    )
}

/// The smallest "round" number (1, 2 or 5 times a power of ten, times the tick count) at or
/// above `max`, so gridline values are whole and readable.
fn nice_ceiling(max: u64) -> u64 {
    if max == 0 {
        return TICKS;
    }
    let step = max.div_ceil(TICKS);
    let mut power = 1u64;
    while power.saturating_mul(10) <= step {
        power *= 10;
    }
    let nice_step = [1, 2, 5, 10]
        .into_iter()
        .map(|m| m * power)
        .find(|&s| s >= step)
        .unwrap_or(10 * power);
    nice_step * TICKS
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars(values: &[u64]) -> Vec<Bar> {
        values
            .iter()
            .enumerate()
            .map(|(i, &value)| Bar {
                label: format!("Day {i}"),
                value,
            })
            .collect()
    }

    #[test]
    fn a_chart_names_and_describes_its_series() {
        let svg = bar_chart("Placed Order per day", "events", &bars(&[1, 7, 2]));
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("role=\"img\""));
        assert!(svg.contains("<title id=\"chart-title\">Placed Order per day</title>"));
        assert!(svg.contains("10 events from Day 0 to Day 2 in 3 buckets; the most, 7, on Day 1."));
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 3);
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn labels_are_escaped() {
        let svg = bar_chart("<b>&", "events", &bars(&[0]));
        assert!(svg.contains("&lt;b&gt;&amp;"));
        assert!(!svg.contains("<b>"));
    }

    #[test]
    fn an_empty_series_draws_axes_only() {
        let svg = bar_chart("Nothing", "events", &[]);
        assert!(svg.contains("No events in this range."));
        assert!(!svg.contains("class=\"bar\""));
    }

    #[test]
    fn gridline_values_are_round() {
        assert_eq!(nice_ceiling(0), 4);
        assert_eq!(nice_ceiling(3), 4);
        assert_eq!(nice_ceiling(7), 8);
        assert_eq!(nice_ceiling(13), 20);
        assert_eq!(nice_ceiling(999), 2000);
    }
}
