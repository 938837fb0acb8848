//! Charts drawn with plotters into memory and saved as PNG (written atomically).

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Context, Result};
use candle_core::Tensor;
use plotters::prelude::*;
use tgc_data::{write_atomic, Label, Stats};
use tgc_explain::render::{blended_heat_map, normalize_attr, Sign};

/// One explained slice: its model input and, per method, the attribution.
pub struct Explained {
    pub label: Option<Label>,
    pub input: Tensor,
    /// Per method: its title (as in the figures) and its attribution.
    pub maps: Vec<(String, tgc_explain::Attribution)>,
}

/// How overlays are drawn: Captum's `visualize_image_attr(method="blended_heat_map",
/// sign="absolute_value", outlier_perc=2, alpha_overlay=0.5)`, as the study's figures were.
pub const OVERLAY_SIGN: Sign = Sign::AbsoluteValue;

/// The model input's first channel with the attribution blended over it.
pub fn overlay_of(x: &Tensor, a: &tgc_explain::Attribution) -> Result<image::RgbImage> {
    let slice: Vec<f32> = x.squeeze(0)?.get(0)?.flatten_all()?.to_vec1()?;
    let (values, h, w) = normalize_attr(&a.attribution.squeeze(0)?, OVERLAY_SIGN, 2.0)?;
    Ok(blended_heat_map(&slice, &values, h, w, OVERLAY_SIGN.colormap(), 0.5))
}

/// Three orthogonal slices of a volume `[D, H, W]` scaled to [0, 1] through `at` = (z, y, x) —
/// axial (z fixed), coronal (y fixed), sagittal (x fixed) — each with the map blended over it
/// (the map normalised over the whole volume, as the overlays of slices are), side by side
/// under a title.
pub fn orthogonal_slices(volume: &tgc_data::Volume, map: &[f32], at: (usize, usize, usize), path: &Path, title: &str) -> Result<()> {
    register_font();
    let (d, h, w) = volume.dims();
    let grey = &volume.voxels;
    let (values, _, _) = normalize_attr(&Tensor::from_slice(map, (1, d * h, w), &candle_core::Device::Cpu)?, OVERLAY_SIGN, 2.0)?;
    let at_voxel = |z: usize, y: usize, x: usize| (z * h + y) * w + x;
    let plane = |rows: usize, cols: usize, index: &dyn Fn(usize, usize) -> usize| -> image::RgbImage {
        let g: Vec<f32> = (0..rows * cols).map(|i| grey[index(i / cols, i % cols)]).collect();
        let v: Vec<f32> = (0..rows * cols).map(|i| values[index(i / cols, i % cols)]).collect();
        blended_heat_map(&g, &v, rows, cols, OVERLAY_SIGN.colormap(), 0.5)
    };
    let (z0, y0, x0) = at;
    let panels = [
        (format!("axial z = {z0}"), plane(h, w, &|r, c| at_voxel(z0, r, c))),
        (format!("coronal y = {y0}"), plane(d, w, &|r, c| at_voxel(r, y0, c))),
        (format!("sagittal x = {x0}"), plane(d, h, &|r, c| at_voxel(r, c, x0))),
    ];
    // Small volumes are shown larger, nearest neighbour.
    let scale = (256 / h.max(w).max(d).max(1)).max(1) as u32;
    let (pad, header) = (8u32, 52u32);
    let width = panels.iter().map(|(_, p)| p.width() * scale + pad).sum::<u32>() + pad;
    let height = header + panels.iter().map(|(_, p)| p.height() * scale).max().unwrap_or(0) + pad;
    let mut canvas = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    let mut x = pad;
    for (_, p) in &panels {
        let big = image::imageops::resize(p, p.width() * scale, p.height() * scale, image::imageops::FilterType::Nearest);
        image::imageops::replace(&mut canvas, &big, x as i64, header as i64);
        x += big.width() + pad;
    }
    let mut rgb = canvas.into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.draw(&Text::new(title.to_owned(), (pad as i32, 4), ("sans-serif", 16).into_font().color(&BLACK))).map_err(draw_err)?;
        let mut x = pad;
        for (label, p) in &panels {
            root.draw(&Text::new(label.clone(), (x as i32, 30), ("sans-serif", 14).into_font().color(&BLACK))).map_err(draw_err)?;
            x += p.width() * scale + pad;
        }
        root.present().map_err(draw_err)?;
    }
    save_png(path, width, height, rgb)
}

/// DejaVu Sans, shipped with the binary so that charts render the same on every machine.
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in, so this cannot fail at run time for a user.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Saves an RGB buffer as PNG.
pub fn save_png(path: &Path, width: u32, height: u32, rgb: Vec<u8>) -> Result<()> {
    let image = image::RgbImage::from_raw(width, height, rgb).ok_or_else(|| anyhow!("internal: RGB buffer does not match {width}x{height}"))?;
    write_atomic(path, |w| image.write_to(w, image::ImageFormat::Png).map_err(|e| e.to_string())).with_context(|| format!("writing {}", path.display()))
}

/// Bar chart of the number of images per history length.
pub fn history_histogram(stats: &Stats, path: &Path) -> Result<()> {
    register_font();
    let (width, height) = (640u32, 420u32);
    let mut buffer = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let max_len = stats.history_len.keys().copied().max().unwrap_or(1);
        let max_count = stats.history_len.values().copied().max().unwrap_or(1);
        let mut chart = ChartBuilder::on(&root)
            .caption("Images by history length", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((1..max_len).into_segmented(), 0..(max_count + max_count / 10 + 1))
            .map_err(draw_err)?;
        chart.configure_mesh().disable_x_mesh().x_desc("visits up to and including the image").y_desc("images").draw().map_err(draw_err)?;
        chart
            .draw_series(
                Histogram::vertical(&chart).style(RGBColor(49, 104, 142).filled()).margin(6).data(stats.history_len.iter().map(|(&len, &count)| (len, count))),
            )
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    save_png(path, width, height, buffer)
}

/// The training and selection loss curves of one run.
pub fn history(history: &[tgc_temporal::train::Epoch], path: &Path, title: &str) -> Result<()> {
    register_font();
    let (width, height) = (640u32, 400u32);
    let mut buffer = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let max_epoch = history.len().max(2) - 1;
        let finite = history.iter().flat_map(|e| [e.train_loss, e.selection_loss]).filter(|v| v.is_finite());
        let max_loss = finite.fold(0.0f64, f64::max).max(1e-3) * 1.05;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0..max_epoch, 0.0..max_loss)
            .map_err(draw_err)?;
        chart.configure_mesh().x_desc("epoch").y_desc("cross-entropy").draw().map_err(draw_err)?;
        let series = [
            ("train loss", RGBColor(49, 104, 142), history.iter().map(|e| (e.epoch, e.train_loss)).collect::<Vec<_>>()),
            ("selection loss", RGBColor(230, 97, 1), history.iter().map(|e| (e.epoch, e.selection_loss)).collect::<Vec<_>>()),
        ];
        for (name, color, points) in series {
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(draw_err)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    save_png(path, width, height, buffer)
}

/// The study's interpretation grid: one row per slice, columns Sample then each method's
/// overlay, a colour bar on the right.
pub fn attribution_grid(rows: &[Explained], path: &Path, title: &str) -> Result<()> {
    register_font();
    let Some(first) = rows.first() else { anyhow::bail!("no slices to draw") };
    let (_, _, th, tw) = first.input.dims4()?;
    let (th, tw) = (th as u32, tw as u32);
    let columns = 1 + first.maps.len() as u32;
    let (pad, header, bar_w) = (6u32, 56u32, 60u32);
    let width = columns * (tw + pad) + pad + bar_w;
    let height = header + rows.len() as u32 * (th + pad) + pad;
    let mut canvas = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    for (r, row) in rows.iter().enumerate() {
        let y = header + r as u32 * (th + pad);
        let slice: Vec<f32> = row.input.squeeze(0)?.get(0)?.flatten_all()?.to_vec1()?;
        let grey = image::RgbImage::from_fn(tw, th, |x, y| {
            let v = (slice[(y * tw + x) as usize].clamp(0.0, 1.0) * 255.0).round() as u8;
            image::Rgb([v, v, v])
        });
        image::imageops::replace(&mut canvas, &grey, pad as i64, y as i64);
        for (c, (_, attribution)) in row.maps.iter().enumerate() {
            let tile = overlay_of(&row.input, attribution)?;
            image::imageops::replace(&mut canvas, &tile, (pad + (c as u32 + 1) * (tw + pad)) as i64, y as i64);
        }
    }
    let bar = tgc_explain::render::colour_bar(16, height - header - 2 * pad, OVERLAY_SIGN.colormap());
    image::imageops::replace(&mut canvas, &bar, (width - bar_w + 8) as i64, (header + pad) as i64);
    let mut rgb = canvas.into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        let text =
            |s: &str, x: u32, y: u32, size: u32| root.draw(&Text::new(s.to_owned(), (x as i32, y as i32), ("sans-serif", size).into_font().color(&BLACK)));
        text(title, pad, 4, 20).map_err(draw_err)?;
        text("Sample", pad, 32, 16).map_err(draw_err)?;
        for (c, (m, _)) in first.maps.iter().enumerate() {
            // The largest size up to 16 at which the title fits its column.
            let fits = |size: u32| root.estimate_text_size(m, &("sans-serif", size).into_font().into()).is_ok_and(|(w, _)| w <= tw);
            let size = (8..=16).rev().find(|&s| fits(s)).unwrap_or(8);
            text(m, pad + (c as u32 + 1) * (tw + pad), 32, size).map_err(draw_err)?;
        }
        for (r, row) in rows.iter().enumerate() {
            if let Some(label) = row.label {
                let y = header + r as u32 * (th + pad) + 4;
                root.draw(&Text::new(label.to_string(), (pad as i32 + 4, y as i32), ("sans-serif", 14).into_font().color(&YELLOW))).map_err(draw_err)?;
            }
        }
        text("high", width - bar_w + 28, header + pad, 13).map_err(draw_err)?;
        text("low", width - bar_w + 28, height - pad - 14, 13).map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    save_png(path, width, height, rgb)
}

/// The temporal strip: each real visit's overlay labelled with its day, then a bar chart of
/// the time-step importance (all `seq_len` steps, padded ones included).
pub fn temporal_strip(input: &candle_core::Tensor, cam: &tgc_explain::Attribution, days: &[i64], importance: &[f32], path: &Path, title: &str) -> Result<()> {
    register_font();
    let (k, _, th, tw) = input.dims4()?;
    let (th, tw) = (th as u32, tw as u32);
    let (pad, header, chart_h) = (6u32, 56u32, 220u32);
    // Wide enough for the visits, the chart, and the title (two visits of a 176-pixel slice
    // are narrower than a title that names the patient, the model and its weights).
    let title_w = ("sans-serif", 18).into_font().box_size(title).map(|(w, _)| w).unwrap_or(0);
    let width = (k as u32 * (tw + pad) + pad).max(520).max(title_w + 2 * pad);
    let height = header + th + pad + chart_h;
    let mut canvas = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    for v in 0..k {
        let visit = tgc_explain::Attribution {
            attribution: cam.attribution.narrow(0, v, 1)?,
            layer_attribution: None,
            logits: cam.logits.clone(),
            convergence_delta: None,
        };
        let tile = overlay_of(&input.narrow(0, v, 1)?, &visit)?;
        image::imageops::replace(&mut canvas, &tile, (pad + v as u32 * (tw + pad)) as i64, header as i64);
    }
    let mut rgb = canvas.into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.draw(&Text::new(title.to_owned(), (pad as i32, 4), ("sans-serif", 18).into_font().color(&BLACK))).map_err(draw_err)?;
        for (v, day) in days.iter().enumerate() {
            let x = (pad + v as u32 * (tw + pad)) as i32;
            root.draw(&Text::new(format!("visit {} — day {day}", v + 1), (x, 32), ("sans-serif", 15).into_font().color(&BLACK))).map_err(draw_err)?;
        }
        let lower = root.split_vertically(header + th + pad).1;
        let n = importance.len();
        let (lo, hi) = importance.iter().fold((0f32, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
        let span = (hi - lo).max(1e-6);
        let mut chart = ChartBuilder::on(&lower)
            .caption("time-step importance (Integrated Gradients; padded steps are 0)", ("sans-serif", 14))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(60)
            .build_cartesian_2d((0..n.saturating_sub(1)).into_segmented(), (lo - 0.1 * span)..(hi + 0.1 * span))
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|s| match s {
                SegmentValue::CenterOf(i) => format!("step {}", i + 1),
                _ => String::new(),
            })
            .draw()
            .map_err(draw_err)?;
        chart
            .draw_series(importance.iter().enumerate().map(|(i, &v)| {
                let color = if v >= 0.0 { RGBColor(33, 145, 140) } else { RGBColor(230, 97, 1) };
                Rectangle::new([(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), v)], color.filled())
            }))
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    save_png(path, width, height, rgb)
}

fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strip_of_two_small_visits_is_as_wide_as_its_title() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strip.png");
        let input = Tensor::rand(0f32, 1.0, (2, 3, 32, 32), &candle_core::Device::Cpu).unwrap();
        let cam = tgc_explain::Attribution::map(Tensor::rand(0f32, 1.0, (2, 1, 32, 32), &candle_core::Device::Cpu).unwrap());
        let title = "OAS30001 — ViT (Seq 3), target disease — RANDOM-INIT (random:1) backbone, probe of iteration 0 of the original protocol";
        temporal_strip(&input, &cam, &[0, 757], &[0.1, -0.2, 0.3], &path, title).unwrap();
        let width = image::open(&path).unwrap().width();
        register_font();
        let title_w = ("sans-serif", 18).into_font().box_size(title).unwrap().0;
        assert!(title_w > 520 && width >= title_w + 12, "strip {width} px, title {title_w} px");
    }
}
