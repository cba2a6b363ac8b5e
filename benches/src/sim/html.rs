//! The self-contained HTML report: the KPI table with definitions and SVG charts over
//! simulated time, drawn with plotters' SVG backend (no scripts, no external files).

use plotters::prelude::*;

use super::{DEFINITIONS, SimReport};

const W: u32 = 900;
const H: u32 = 300;
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// One line of a chart: a label and its points (hours, value).
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
}

fn chart(title: &str, y_label: &str, series: &[Series]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let x_max = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(1.0_f64, f64::max);
        let (y_min, y_max) = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        let (y_min, y_max) = if y_min.is_finite() && y_max.is_finite() {
            let pad = ((y_max - y_min) * 0.05).max(1e-6);
            (y_min - pad, y_max + pad)
        } else {
            (0.0, 1.0)
        };
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, y_min..y_max)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc("simulated hours since start")
            .y_desc(y_label)
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, s) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            c.draw_series(LineSeries::new(s.points.iter().copied(), &color))
                .map_err(|e| e.to_string())?
                .label(s.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The report as one HTML document.
pub fn render(r: &SimReport) -> Result<String, String> {
    let tl = &r.timeline;
    let pts = |f: &dyn Fn(&super::Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        tl.iter()
            .filter_map(|s| f(s).map(|v| (s.hour, v)))
            .collect()
    };
    let mut charts = Vec::new();
    charts.push(chart(
        "Online orders and walk-in units per minute",
        "per minute",
        &[
            Series {
                label: "online orders".into(),
                points: pts(&|s| Some(s.orders_per_min)),
            },
            Series {
                label: "walk-in units".into(),
                points: pts(&|s| Some(s.walkins_per_min)),
            },
        ],
    )?);
    let hot: Vec<Series> = r
        .hot_skus
        .iter()
        .enumerate()
        .map(|(i, name)| Series {
            label: format!("{name} (rank {})", i + 1),
            points: pts(&|s| s.hot_atp.get(i).map(|v| *v as f64)),
        })
        .collect();
    charts.push(chart(
        "ATP of the hottest SKUs, summed over stores",
        "units",
        &hot,
    )?);
    let mut queues = vec![
        Series {
            label: "longest store queue".into(),
            points: pts(&|s| Some(f64::from(s.queue_max))),
        },
        Series {
            label: "mean store queue".into(),
            points: pts(&|s| Some(s.queue_mean)),
        },
    ];
    for (i, z) in r.zones.iter().enumerate() {
        queues.push(Series {
            label: format!("{z} (all stores)"),
            points: pts(&|s| s.queue_by_zone.get(i).map(|v| f64::from(*v))),
        });
    }
    charts.push(chart("Orders waiting to be picked", "orders", &queues)?);
    charts.push(chart(
        "Fulfillment time of orders ready in each interval (open-store minutes)",
        "minutes",
        &[Series {
            label: "average".into(),
            points: pts(&|s| s.fulfillment_avg_min),
        }],
    )?);
    charts.push(chart(
        "Inventory accuracy per sample and pickup conversion so far",
        "share",
        &[
            Series {
                label: "inventory accuracy".into(),
                points: pts(&|s| Some(s.accuracy)),
            },
            Series {
                label: "pickup conversion".into(),
                points: pts(&|s| Some(s.conversion_so_far)),
            },
        ],
    )?);

    let mut html = String::new();
    html.push_str(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Pickline simulation report</title><style>\
         body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;\
         text-align:left}.met{color:#060}.missed{color:#b00;font-weight:bold}\
         </style></head><body>\n",
    );
    html.push_str(&format!(
        "<h1>Pickline simulation: {}</h1>\n<p>Seed {}, backend {}, {} stores x {} SKUs, \
         {:.0} simulated hours.</p>\n",
        esc(&r.scenario),
        r.seed,
        esc(&r.backend),
        r.stores,
        r.skus,
        r.simulated_hours
    ));
    html.push_str("<h2>KPIs</h2>\n<table><tr><th>KPI</th><th>value</th><th>target</th></tr>\n");
    let target = |name: &str, t: &str| match r.targets.get(name) {
        Some(true) => format!("<span class=\"met\">{} met</span>", esc(t)),
        Some(false) => format!("<span class=\"missed\">{} MISSED</span>", esc(t)),
        None => String::new(),
    };
    let k = &r.kpis;
    let rows = [
        ("orders", k.orders.to_string(), String::new()),
        (
            "orders_refused",
            format!("{:?}", k.orders_refused),
            String::new(),
        ),
        (
            "fulfillment_avg_min",
            format!("{:.2}", k.fulfillment_avg_min),
            target("fulfillment_avg_min", "< 15"),
        ),
        (
            "fulfillment_p90_min",
            format!("{:.2}", k.fulfillment_p90_min),
            String::new(),
        ),
        (
            "inventory_accuracy",
            format!(
                "{:.5} ({} cells sampled)",
                k.inventory_accuracy, k.accuracy_cells_sampled
            ),
            target("inventory_accuracy", ">= 0.998"),
        ),
        (
            "pickup_conversion",
            format!("{:.4}", k.pickup_conversion),
            target("pickup_conversion", "> 0.95"),
        ),
        (
            "oversells",
            k.oversells.to_string(),
            target("oversells", "== 0"),
        ),
        (
            "short picks (units)",
            format!("{} ({})", k.short_picks, k.short_pick_units),
            String::new(),
        ),
        (
            "shortage_events",
            k.shortage_events.to_string(),
            String::new(),
        ),
        (
            "ready / collected / no-show",
            format!(
                "{} / {} / {}",
                k.orders_ready, k.orders_collected, k.no_shows
            ),
            String::new(),
        ),
        (
            "walk-in units sold / lost",
            format!("{} / {}", k.walkin_units, k.lost_walkin_units),
            String::new(),
        ),
        (
            "POS sent / duplicates sent / dropped by engine / lost",
            format!(
                "{} / {} / {} / {}",
                k.pos_events_sent,
                k.pos_duplicates_sent,
                k.pos_duplicates_dropped,
                k.pos_events_lost
            ),
            String::new(),
        ),
        ("shrink_units", k.shrink_units.to_string(), String::new()),
        (
            "empty_shelf_counts",
            k.empty_shelf_counts.to_string(),
            String::new(),
        ),
    ];
    for (name, v, t) in rows {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{t}</td></tr>\n",
            esc(name),
            esc(&v)
        ));
    }
    html.push_str("</table>\n<h2>Definitions</h2>\n<ul>\n");
    for (name, def) in DEFINITIONS {
        html.push_str(&format!("<li><b>{}</b>: {}</li>\n", esc(name), esc(def)));
    }
    html.push_str("</ul>\n<h2>Over simulated time</h2>\n");
    for c in charts {
        html.push_str("<div>");
        html.push_str(&c);
        html.push_str("</div>\n");
    }
    html.push_str("</body></html>\n");
    Ok(html)
}
