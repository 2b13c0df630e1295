//! The Prometheus text exposition format (version 0.0.4): `# HELP`, `# TYPE`
//! and one line per sample, label values escaped. Small enough to write out
//! rather than pull in a client library and its derive macros.

use std::fmt::Write;

pub use crate::state::telemetry::Histogram;

/// A text exposition being written.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Exposition {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(
            self.text,
            "# HELP {name} {}",
            help.replace('\\', "\\\\").replace('\n', "\\n")
        );
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: Labels, value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let escaped = value
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.text, "{key}=\"{escaped}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    /// A family of gauges (values that go up and down).
    pub fn gauges<'a>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, f64)>,
    ) {
        self.header(name, "gauge", help);
        for (labels, value) in samples {
            self.sample(name, &labels, value);
        }
    }

    /// A family of counters; `name` ends in `_total`.
    pub fn counters<'a>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, f64)>,
    ) {
        debug_assert!(name.ends_with("_total"));
        // The text format names the family as its samples are named, `_total` included.
        self.header(name, "counter", help);
        for (labels, value) in samples {
            self.sample(name, &labels, value);
        }
    }

    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.header(name, "histogram", help);
        let mut cumulative = 0;
        let bucket = format!("{name}_bucket");
        for (bound, count) in histogram.bounds.iter().zip(&histogram.counts) {
            cumulative += count;
            let le = number(*bound);
            self.sample(&bucket, &[("le", &le)], cumulative as f64);
        }
        self.sample(&bucket, &[("le", "+Inf")], histogram.count as f64);
        self.sample(&format!("{name}_sum"), &[], histogram.sum);
        self.sample(&format!("{name}_count"), &[], histogram.count as f64);
    }

    pub fn finish(self) -> String {
        self.text
    }
}

fn number(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_families_with_escaped_labels_and_cumulative_buckets() {
        let mut out = Exposition::default();
        out.gauges(
            "flotilla_runs",
            "Runs by state.",
            [(vec![("experiment", "a\"b"), ("state", "running")], 3.0)],
        );
        let mut histogram = Histogram::new(&[1.0, 10.0]);
        for value in [0.5, 2.0, 20.0] {
            histogram.observe(value);
        }
        out.histogram("flotilla_run_duration_seconds", "Durations.", &histogram);
        let text = out.finish();
        assert!(text.contains("flotilla_runs{experiment=\"a\\\"b\",state=\"running\"} 3\n"));
        assert!(text.contains("flotilla_run_duration_seconds_bucket{le=\"1\"} 1\n"));
        assert!(text.contains("flotilla_run_duration_seconds_bucket{le=\"10\"} 2\n"));
        assert!(text.contains("flotilla_run_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("flotilla_run_duration_seconds_sum 22.5\n"));
    }
}
