//! The built-in test pattern: colour bars, a moving box, a burnt-in wall clock and frame
//! counter, a machine-readable time code, and a tone with a beep on every second.
//!
//! The time code is a row of 64 cells across the top of the picture: a white start cell, a
//! black cell, the capture time in milliseconds since the Unix epoch as 48 bits (most
//! significant first, white = 1), an 8-bit checksum, and a white end cell. Cells are large
//! enough to survive H.264 at any sensible bit rate, so a player (or a test) can read the
//! capture time of the frame it shows and measure glass-to-glass latency without OCR.

use crate::font::{GLYPH_H, GLYPH_W, glyph};

/// Luma of black and white in limited range (BT.601/709).
const BLACK: u8 = 16;
const WHITE: u8 = 235;
/// Number of time-code cells across the picture.
const CODE_CELLS: usize = 64;
const CODE_BITS: usize = 48;

/// A picture in planar YUV 4:2:0 (limited range), owned, without padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Picture {
    /// Width in pixels (even).
    pub width: usize,
    /// Height in pixels (even).
    pub height: usize,
    /// Luma, `width * height` bytes.
    pub y: Vec<u8>,
    /// Blue-difference chroma, a quarter of the luma's size.
    pub u: Vec<u8>,
    /// Red-difference chroma, a quarter of the luma's size.
    pub v: Vec<u8>,
}

impl Picture {
    /// A picture filled with one colour.
    pub fn filled(width: usize, height: usize, (y, u, v): (u8, u8, u8)) -> Self {
        let chroma = (width / 2) * (height / 2);
        Self {
            width,
            height,
            y: vec![y; width * height],
            u: vec![u; chroma],
            v: vec![v; chroma],
        }
    }

    /// Fills a rectangle (clipped to the picture; chroma on the even grid that covers it).
    pub fn fill_rect(
        &mut self,
        x: usize,
        y: usize,
        w: usize,
        h: usize,
        (cy, cu, cv): (u8, u8, u8),
    ) {
        let x1 = (x + w).min(self.width);
        let y1 = (y + h).min(self.height);
        for row in y.min(y1)..y1 {
            self.y[row * self.width + x.min(x1)..row * self.width + x1].fill(cy);
        }
        let cw = self.width / 2;
        let (cx0, cx1) = ((x / 2).min(cw), x1.div_ceil(2).min(cw));
        for row in (y / 2)..y1.div_ceil(2).min(self.height / 2) {
            self.u[row * cw + cx0..row * cw + cx1].fill(cu);
            self.v[row * cw + cx0..row * cw + cx1].fill(cv);
        }
    }

    /// Draws `text` in white on black with its top-left corner at (x, y), each font pixel a
    /// `scale` x `scale` square. Returns the width drawn.
    pub fn draw_text(&mut self, x: usize, y: usize, scale: usize, text: &str) -> usize {
        let advance = (GLYPH_W + 1) * scale;
        let pad = scale;
        let width = text.chars().count() * advance + pad;
        self.fill_rect(x, y, width, GLYPH_H * scale + 2 * pad, (BLACK, 128, 128));
        for (i, c) in text.chars().enumerate() {
            let gx = x + pad + i * advance;
            for (r, bits) in glyph(c).iter().enumerate() {
                for col in 0..GLYPH_W {
                    if bits & (1 << (GLYPH_W - 1 - col)) != 0 {
                        let px = gx + col * scale;
                        let py = y + pad + r * scale;
                        for yy in py..(py + scale).min(self.height) {
                            let start = yy * self.width + px.min(self.width);
                            let end = yy * self.width + (px + scale).min(self.width);
                            self.y[start..end].fill(WHITE);
                        }
                    }
                }
            }
        }
        width
    }
}

/// The checksum carried beside the time code: the bytes of the 48-bit value summed.
fn checksum(ms: u64) -> u8 {
    (0..6).fold(0u8, |acc, i| acc.wrapping_add((ms >> (8 * i)) as u8))
}

/// Height of the time-code row for a picture of this height.
fn code_height(height: usize) -> usize {
    (height / 36).max(4) & !1
}

/// The bits of the time-code row, cell by cell.
fn code_cells(ms: u64) -> [bool; CODE_CELLS] {
    let mut cells = [false; CODE_CELLS];
    cells[0] = true;
    for bit in 0..CODE_BITS {
        cells[2 + bit] = ms >> (CODE_BITS - 1 - bit) & 1 == 1;
    }
    let sum = checksum(ms);
    for bit in 0..8 {
        cells[2 + CODE_BITS + bit] = sum >> (7 - bit) & 1 == 1;
    }
    cells[CODE_CELLS - 1] = true;
    cells
}

/// Reads the time code from the luma plane of a decoded picture (any stride). Returns the
/// capture time in milliseconds since the Unix epoch, or `None` when the row does not carry a
/// valid code (no pattern, or too damaged).
pub fn read_time_code(luma: &[u8], stride: usize, width: usize, height: usize) -> Option<u64> {
    let cell_w = width / CODE_CELLS;
    let row = code_height(height) / 2;
    if cell_w == 0 || row >= height || luma.len() < row * stride + width {
        return None;
    }
    let mut cells = [false; CODE_CELLS];
    for (i, cell) in cells.iter_mut().enumerate() {
        // Average the middle half of the cell, away from edges that compression smears.
        let x0 = i * cell_w + cell_w / 4;
        let x1 = (i * cell_w + 3 * cell_w / 4).max(x0 + 1);
        let sum: u32 = luma[row * stride + x0..row * stride + x1]
            .iter()
            .map(|&p| u32::from(p))
            .sum();
        *cell = sum / (x1 - x0) as u32 > u32::from(BLACK + WHITE) / 2;
    }
    if !cells[0] || cells[1] || !cells[CODE_CELLS - 1] {
        return None;
    }
    let ms = (0..CODE_BITS).fold(0u64, |acc, b| acc << 1 | u64::from(cells[2 + b]));
    let sum = (0..8).fold(0u8, |acc, b| acc << 1 | u8::from(cells[2 + CODE_BITS + b]));
    (sum == checksum(ms)).then_some(ms)
}

/// Renders the test pattern's frames. Keeps the static background and redraws only what
/// moves, so a 720p frame costs a copy and a few small fills.
#[derive(Debug)]
pub struct Pattern {
    background: Picture,
    name: String,
}

/// 75% colour bars in BT.601 limited range: white, yellow, cyan, green, magenta, red, blue.
const BARS: [(u8, u8, u8); 7] = [
    (180, 128, 128),
    (162, 44, 142),
    (131, 156, 44),
    (112, 72, 58),
    (84, 184, 198),
    (65, 100, 212),
    (35, 212, 114),
];

impl Pattern {
    /// A pattern of this size (both even, at least 128 x 72) showing the channel `name`.
    pub fn new(width: usize, height: usize, name: &str) -> Self {
        let mut background = Picture::filled(width, height, (40, 128, 128));
        let bars_h = height * 3 / 5;
        for (i, colour) in BARS.iter().enumerate() {
            let x0 = i * width / BARS.len();
            let x1 = (i + 1) * width / BARS.len();
            background.fill_rect(x0 & !1, 0, (x1 & !1) - (x0 & !1), bars_h, *colour);
        }
        Self {
            background,
            name: name.chars().take(40).collect(),
        }
    }

    /// The picture for frame `index` captured at `wall_us` (microseconds since the Unix epoch).
    /// `fps` sets the speed of the moving box (one sweep every two seconds).
    pub fn render(&self, index: u64, wall_us: u64, fps: u32) -> Picture {
        let mut p = self.background.clone();
        let (w, h) = (p.width, p.height);
        let scale = (h / 90).max(1);
        // The time code row across the top.
        let code_h = code_height(h);
        let cell_w = w / CODE_CELLS;
        for (i, on) in code_cells(wall_us / 1000).iter().enumerate() {
            let luma = if *on { WHITE } else { BLACK };
            p.fill_rect(i * cell_w, 0, cell_w, code_h, (luma, 128, 128));
        }
        // A box sweeping across the lower band shows motion (and dropped frames).
        let period = u64::from(fps.max(1)) * 2;
        let side = (h / 10) & !1;
        let travel = w - side;
        let phase = index % period;
        let x = (phase as usize * travel / period as usize) & !1;
        p.fill_rect(x, h * 3 / 5 + scale * 2, side, side, (WHITE, 128, 128));
        // Burnt-in text: the wall clock (UTC) and the frame counter.
        let secs = wall_us / 1_000_000;
        let clock = format!(
            "{:02}:{:02}:{:02}.{:03} UTC",
            secs / 3600 % 24,
            secs / 60 % 60,
            secs % 60,
            wall_us / 1000 % 1000
        );
        let line = GLYPH_H * scale + 3 * scale;
        let text_y = h * 3 / 5 + side + scale * 4;
        let text_x = w / 16;
        p.draw_text(text_x, text_y, scale, &clock);
        p.draw_text(text_x, text_y + line, scale, &format!("FRAME {index:08}"));
        if !self.name.is_empty() {
            p.draw_text(text_x, text_y + 2 * line, (scale / 2).max(1), &self.name);
        }
        p
    }
}

/// The test pattern's sound: a quiet 440 Hz tone, with a louder 1 kHz beep during the first
/// 100 ms of every second of media time (an audible reference for audio/video sync).
pub fn tone(first_sample: u64, rate: u32, left: &mut [f32], right: &mut [f32]) {
    let rate64 = u64::from(rate);
    for (i, (l, r)) in left.iter_mut().zip(right.iter_mut()).enumerate() {
        let n = first_sample + i as u64;
        let t = (n % rate64) as f32 / rate as f32;
        let phase = |f: u64| ((n * f) % rate64) as f32 / rate as f32 * std::f32::consts::TAU;
        let mut s = 0.1 * phase(440).sin();
        if t < 0.1 {
            s += 0.3 * phase(1000).sin();
        }
        *l = s;
        *r = s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_code_round_trips_at_several_sizes() {
        for (w, h) in [(1280, 720), (640, 360), (1920, 1080), (256, 144)] {
            let pattern = Pattern::new(w, h, "test");
            for wall_us in [0u64, 1_763_790_000_123_456, (1 << 47) * 1000 - 1] {
                let p = pattern.render(7, wall_us, 30);
                assert_eq!(
                    read_time_code(&p.y, w, w, h),
                    Some(wall_us / 1000),
                    "{w}x{h}"
                );
            }
        }
    }

    #[test]
    fn damaged_time_code_is_refused_not_misread() {
        let pattern = Pattern::new(640, 360, "");
        let mut p = pattern.render(0, 1_763_790_000_123_000, 30);
        // Flip one data cell: the checksum no longer matches.
        let cell_w = 640 / CODE_CELLS;
        let x = 10 * cell_w;
        let on = p.y[(code_height(360) / 2) * 640 + x + cell_w / 2] > 128;
        let luma = if on { BLACK } else { WHITE };
        p.fill_rect(x, 0, cell_w, code_height(360), (luma, 128, 128));
        assert_eq!(read_time_code(&p.y, 640, 640, 360), None);
        // A picture without a code.
        let blank = Picture::filled(640, 360, (16, 128, 128));
        assert_eq!(read_time_code(&blank.y, 640, 640, 360), None);
    }

    #[test]
    fn frames_differ_where_they_should() {
        let pattern = Pattern::new(640, 360, "x");
        let a = pattern.render(1, 1_000_000, 30);
        let b = pattern.render(2, 1_000_000, 30);
        assert_ne!(a.y, b.y, "the box and the counter move");
        assert_eq!(a.u.len(), 320 * 180);
        // The bars are untouched.
        assert_eq!(a.y[100 * 640 + 45], 180);
    }

    #[test]
    fn tone_is_continuous_across_calls_and_beeps_each_second() {
        let mut l1 = vec![0.0; 960];
        let mut r1 = vec![0.0; 960];
        tone(0, 48_000, &mut l1, &mut r1);
        let mut l2 = vec![0.0; 480];
        let mut r2 = vec![0.0; 480];
        tone(480, 48_000, &mut l2, &mut r2);
        assert_eq!(&l1[480..], &l2[..]);
        let peak = |s: &[f32]| s.iter().fold(0f32, |m, x| m.max(x.abs()));
        let mut quiet = vec![0.0; 960];
        let mut q2 = vec![0.0; 960];
        tone(24_000, 48_000, &mut quiet, &mut q2);
        assert!(peak(&l1) > 0.3 && peak(&quiet) <= 0.1001);
    }
}
