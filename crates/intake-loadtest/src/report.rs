//! The report of a run: `report.json` (everything, for tools), `report.md`
//! (for people) and `chart.svg` (throughput, p99 latency and refusals per
//! second, with each fault as a marked vertical line).
//!
//! The chart uses plotters' SVG backend without system fonts: text is
//! written as SVG `<text>` and sized by plotters' built-in estimate, so no
//! fontconfig or font files are needed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::Summary;
use crate::alerts::AlertSpan;
use crate::error::LoadError;
use crate::faults::FaultMark;
use crate::scenario::Rate;
use crate::tally::Counts;
use crate::verify::SinkCheck;

#[derive(Debug, Clone, Serialize)]
pub struct SecondRow {
    /// Seconds from the start (this row covers [t, t+1)).
    pub t: u64,
    pub offered: u64,
    pub acked: u64,
    pub rejected: u64,
    pub errors: u64,
    /// Of the acknowledgements that came in this second; 0 when none did.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Emergencies answered in this second (part of the counts above): a
    /// surge's first seconds are where admission has least to go on.
    pub emergency_acked: u64,
    pub emergency_errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseRow {
    pub name: String,
    pub start_s: f64,
    pub end_s: f64,
    /// Arrivals per second, or "max".
    pub rate: String,
    pub total: Option<u64>,
    pub counts: Counts,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub description: String,
    pub scale: f64,
    pub elapsed_s: f64,
    pub acked: u64,
    pub rejected: u64,
    pub errors: u64,
    pub client_dropped: u64,
    /// Attempts after a request's first, and requests the retry budget
    /// kept from another attempt.
    pub retries: u64,
    pub retries_throttled: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub throughput_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub sink: Option<SinkCheck>,
    /// Errors other than the load tool's own drops, by gRPC code.
    pub errors_by_code: BTreeMap<String, u64>,
    /// The first message seen per code.
    pub error_samples: BTreeMap<String, String>,
    pub phases: Vec<PhaseRow>,
    pub faults: Vec<FaultMark>,
    /// Surges the cluster raised: `{"district", "category", "raised_s",
    /// "cleared_s"}`, seconds since the run's start, `cleared_s` null while
    /// still active at the end.
    pub alerts: Vec<AlertSpan>,
    pub series: Vec<SecondRow>,
    pub notes: Vec<String>,
    /// The last line `intake load` printed.
    pub contract: String,
}

impl Report {
    pub fn from_summary(s: &Summary) -> Report {
        let series = s
            .tally
            .seconds
            .iter()
            .enumerate()
            .map(|(t, sec)| {
                let q = |q: f64| {
                    sec.latency
                        .as_ref()
                        .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
                };
                SecondRow {
                    t: t as u64,
                    offered: sec.counts.offered,
                    acked: sec.counts.acked,
                    rejected: sec.counts.rejected,
                    errors: sec.counts.errors,
                    p50_ms: q(0.5),
                    p99_ms: q(0.99),
                    emergency_acked: sec.emergency.acked,
                    emergency_errors: sec.emergency.errors,
                }
            })
            .collect();
        let phases = s
            .scenario
            .phases
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (start_s, end_s) = s.phase_spans.get(i).copied().unwrap_or((0.0, 0.0));
                PhaseRow {
                    name: p.name.clone(),
                    start_s,
                    end_s,
                    rate: match p.rate {
                        Rate::PerSecond(r) => format!("{r:.1}/s"),
                        Rate::Max => format!("max ({} workers)", p.concurrency),
                    },
                    total: p.total,
                    counts: s.tally.phases.get(i).copied().unwrap_or_default(),
                }
            })
            .collect();
        Report {
            scenario: s.scenario.name.clone(),
            description: s.scenario.description.clone(),
            scale: s.scenario.scale,
            elapsed_s: s.elapsed.as_secs_f64(),
            acked: s.tally.acked,
            rejected: s.tally.rejected,
            errors: s.tally.errors,
            client_dropped: s.tally.dropped,
            retries: s.tally.retries,
            retries_throttled: s.tally.retries_throttled,
            lost: s.lost,
            duplicates: s.duplicates,
            throughput_per_s: s.throughput(),
            p50_ms: s.ms(0.5),
            p99_ms: s.ms(0.99),
            max_ms: s.latency.max() as f64 / 1000.0,
            sink: s.sink.clone(),
            errors_by_code: s.tally.error_codes.clone(),
            error_samples: s.tally.error_samples.clone(),
            phases,
            faults: s.faults.clone(),
            alerts: s.alerts.clone(),
            series,
            notes: s.notes.clone(),
            contract: s.contract_line(),
        }
    }

    /// Writes report.json, report.md and chart.svg into `dir` (created).
    pub fn write(&self, dir: &Path) -> Result<(), LoadError> {
        std::fs::create_dir_all(dir).map_err(|e| LoadError::io(format!("creating {}", dir.display()), e))?;
        let json = serde_json::to_string_pretty(self).map_err(|e| LoadError::Report(e.to_string()))?;
        write_file(&dir.join("report.json"), json.as_bytes())?;
        write_file(&dir.join("report.md"), self.markdown().as_bytes())?;
        self.chart(&dir.join("chart.svg"))
    }

    pub fn markdown(&self) -> String {
        let mut m = String::new();
        // Writing to a String cannot fail; the results are ignored for that reason.
        let _ = writeln!(
            m,
            "# Load scenario `{}`\n\n{}\n",
            self.scenario,
            self.description.trim()
        );
        if self.scale != 1.0 {
            let _ = writeln!(m, "Scaled by {} (rates and totals).\n", self.scale);
        }
        let _ = writeln!(m, "## Summary\n\n| what | value |\n| --- | --- |");
        let sink = self.sink.clone().unwrap_or_default();
        for (k, v) in [
            ("acknowledged", self.acked.to_string()),
            ("refused (RESOURCE_EXHAUSTED)", self.rejected.to_string()),
            ("other errors", self.errors.to_string()),
            (
                "of which dropped by the load tool",
                self.client_dropped.to_string(),
            ),
            (
                "retries sent / kept back by the retry budget",
                format!("{} / {}", self.retries, self.retries_throttled),
            ),
            ("lost", self.lost.to_string()),
            ("duplicates", self.duplicates.to_string()),
            (
                "throughput",
                format!("{:.0}/s over {:.1} s", self.throughput_per_s, self.elapsed_s),
            ),
            (
                "latency p50 / p99 / max",
                format!("{:.2} / {:.2} / {:.2} ms", self.p50_ms, self.p99_ms, self.max_ms),
            ),
        ] {
            let _ = writeln!(m, "| {k} | {v} |");
        }
        for (code, n) in &self.errors_by_code {
            let sample = self.error_samples.get(code).map_or("", String::as_str);
            let _ = writeln!(m, "| error {code} | {n} (e.g. {sample:?}) |");
        }
        let _ = writeln!(
            m,
            "\n## Phases\n\n| phase | from s | to s | rate | total | offered | acked | refused | errors |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for p in &self.phases {
            let _ = writeln!(
                m,
                "| {} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} |",
                p.name,
                p.start_s,
                p.end_s,
                p.rate,
                p.total.map_or("-".into(), |t| t.to_string()),
                p.counts.offered,
                p.counts.acked,
                p.counts.rejected,
                p.counts.errors
            );
        }
        let _ = writeln!(m, "\n## Faults\n");
        if self.faults.is_empty() {
            let _ = writeln!(m, "None.");
        } else {
            let _ = writeln!(
                m,
                "| planned s | at s | done s | action | result |\n| --- | --- | --- | --- | --- |"
            );
            for f in &self.faults {
                let _ = writeln!(
                    m,
                    "| {:.1} | {:.1} | {:.1} | {} | {}{} |",
                    f.planned_s,
                    f.at_s,
                    f.done_s,
                    f.action,
                    if f.ok { "" } else { "FAILED: " },
                    f.detail
                );
            }
        }
        let _ = writeln!(m, "\n## Surge alerts\n");
        if self.alerts.is_empty() {
            let _ = writeln!(m, "None.");
        } else {
            let _ = writeln!(
                m,
                "| district | category | raised s | cleared s |\n| --- | --- | --- | --- |"
            );
            for a in &self.alerts {
                let _ = writeln!(
                    m,
                    "| {} | {} | {:.1} | {} |",
                    a.district,
                    a.category,
                    a.raised_s,
                    a.cleared_s
                        .map_or("still active".to_string(), |c| format!("{c:.1}"))
                );
            }
        }
        let _ = writeln!(m, "\n## Verification\n");
        let _ = writeln!(
            m,
            "Every acknowledged key was looked up through the cluster (GetTicket). Lost: {}, duplicates: {}.",
            self.lost, self.duplicates
        );
        if self.sink.is_some() {
            let _ = writeln!(
                m,
                "Sink: waited {:.1} s for every shard's dispatch lag to reach 0 ({}); missing from the sink file: {}, there more than once: {}, unreadable lines: {}.",
                sink.waited_s,
                if sink.drained { "it did" } else { "it did NOT" },
                sink.missing,
                sink.duplicates,
                sink.unreadable_lines
            );
        } else {
            let _ = writeln!(m, "No sink was checked.");
        }
        for n in &self.notes {
            let _ = writeln!(m, "\n- {n}");
        }
        let _ = writeln!(m, "\nContract line: `{}`\n\n![chart](chart.svg)", self.contract);
        m
    }

    /// Three panels over time: acknowledged/s, p99 ms, refused and errors/s.
    pub fn chart(&self, path: &Path) -> Result<(), LoadError> {
        self.draw(path)
            .map_err(|e| LoadError::Report(format!("chart {}: {e}", path.display())))
    }

    fn draw(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1000, 780)).into_drawing_area();
        root.fill(&WHITE)?;
        let (title, body) = root.split_vertically(30);
        title.draw(&Text::new(
            format!("{} - {}", self.scenario, self.contract),
            (10, 8),
            ("sans-serif", 13),
        ))?;
        let panels = body.split_evenly((3, 1));
        let xmax = (self.series.len() as f64).max(self.elapsed_s).max(1.0);
        let col = |f: fn(&SecondRow) -> f64| -> Vec<(f64, f64)> {
            self.series.iter().map(|r| (r.t as f64 + 0.5, f(r))).collect()
        };
        let plots: [(&str, Vec<Line>); 3] = [
            (
                "acknowledged complaints per second",
                vec![("acked/s", col(|r| r.acked as f64), BLUE)],
            ),
            (
                "p99 latency of acknowledgements (ms)",
                vec![("p99 ms", col(|r| r.p99_ms), MAGENTA)],
            ),
            (
                "refused and failed per second",
                vec![
                    ("refused/s", col(|r| r.rejected as f64), RGBColor(230, 140, 0)),
                    ("errors/s", col(|r| r.errors as f64), BLACK),
                ],
            ),
        ];
        for (n, (area, (caption, lines))) in panels.iter().zip(plots).enumerate() {
            let ymax = lines
                .iter()
                .flat_map(|l| l.1.iter().map(|p| p.1))
                .fold(0.0f64, f64::max)
                .max(1.0)
                * 1.15;
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 14))
                .margin(8)
                .x_label_area_size(34)
                .y_label_area_size(55)
                .build_cartesian_2d(0.0..xmax, 0.0..ymax)?;
            chart
                .configure_mesh()
                .x_desc("seconds")
                .light_line_style(WHITE)
                .draw()?;
            for (label, points, color) in lines {
                chart
                    .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            }
            for f in &self.faults {
                let marks = std::iter::once((f.at_s, f.action.clone(), RED)).chain(
                    f.until_s
                        .map(|u| (u, format!("{} ends", f.action), RGBColor(240, 150, 150))),
                );
                for (x, label, color) in marks {
                    chart.draw_series(LineSeries::new(vec![(x, 0.0), (x, ymax)], color.stroke_width(1)))?;
                    chart.draw_series(std::iter::once(Text::new(
                        label,
                        (x, ymax * 0.97),
                        ("sans-serif", 11).into_font().color(&color),
                    )))?;
                }
            }
            if n == 0 {
                self.draw_alerts(&mut chart, xmax, ymax)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
        Ok(())
    }
}

impl Report {
    /// Each surge alert as a green bar from raised to cleared (or the end),
    /// stacked from the top of the panel, labelled with district and category.
    fn draw_alerts<DB: DrawingBackend>(
        &self,
        chart: &mut ChartContext<
            '_,
            DB,
            Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
        >,
        xmax: f64,
        ymax: f64,
    ) -> Result<(), Box<dyn std::error::Error>>
    where
        DB::ErrorType: 'static,
    {
        let green = RGBColor(0, 150, 60);
        let rows = self.alerts.len().clamp(1, 24) as f64;
        for (i, a) in self.alerts.iter().take(24).enumerate() {
            let y = ymax * (0.93 - 0.45 * i as f64 / rows);
            let end = a.cleared_s.unwrap_or(xmax);
            chart.draw_series(LineSeries::new(
                vec![(a.raised_s, y), (end, y)],
                green.stroke_width(3),
            ))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("surge {} {}", a.district, a.category),
                (a.raised_s, y),
                ("sans-serif", 10).into_font().color(&green),
            )))?;
        }
        Ok(())
    }
}

/// A labelled series of (second, value) points and its colour.
type Line<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    std::fs::write(path, bytes).map_err(|e| LoadError::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            scenario: "t".into(),
            description: "a test".into(),
            scale: 1.0,
            elapsed_s: 3.0,
            acked: 5,
            rejected: 1,
            errors: 1,
            client_dropped: 0,
            retries: 0,
            retries_throttled: 0,
            lost: 0,
            duplicates: 0,
            throughput_per_s: 1.7,
            p50_ms: 3.0,
            p99_ms: 9.0,
            max_ms: 9.5,
            sink: Some(SinkCheck::default()),
            errors_by_code: BTreeMap::from([("Unavailable".to_string(), 1)]),
            error_samples: BTreeMap::new(),
            phases: Vec::new(),
            faults: vec![FaultMark {
                planned_s: 1.0,
                at_s: 1.1,
                done_s: 1.2,
                until_s: Some(2.0),
                action: "kill_leader".into(),
                detail: "kill -9 node 2".into(),
                ok: true,
            }],
            series: (0..3)
                .map(|t| SecondRow {
                    t,
                    offered: 3,
                    acked: 2,
                    rejected: t,
                    errors: 0,
                    p50_ms: 2.0,
                    p99_ms: 5.0 + t as f64,
                    emergency_acked: 1,
                    emergency_errors: 0,
                })
                .collect(),
            alerts: vec![AlertSpan {
                district: "110109".into(),
                category: "flood".into(),
                raised_s: 1.5,
                cleared_s: None,
            }],
            notes: vec!["a note".into()],
            contract: "acked=5 rejected=1 errors=1 lost=0 duplicates=0 throughput=2/s p50_ms=3.00 p99_ms=9.00 max_ms=9.50"
                .into(),
        }
    }

    #[test]
    fn report_writes_json_markdown_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        sample().write(dir.path()).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("chart.svg")).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(
            svg.contains("<polyline") || svg.contains("<path"),
            "no lines drawn"
        );
        assert!(svg.contains("kill_leader"), "fault mark label missing");
        assert!(svg.contains("kill_leader ends"), "end-of-fault label missing");
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("| lost | 0 |"));
        assert!(md.contains("| error Unavailable | 1"), "{md}");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
        assert_eq!(json["series"].as_array().unwrap().len(), 3);
        assert_eq!(json["faults"][0]["action"], "kill_leader");
        assert_eq!(json["alerts"][0]["district"], "110109");
        assert_eq!(json["alerts"][0]["raised_s"], 1.5);
        assert!(json["alerts"][0]["cleared_s"].is_null());
        assert!(svg.contains("surge 110109 flood"), "alert mark missing");
        assert!(md.contains("| 110109 | flood | 1.5 | still active |"), "{md}");
    }
}
