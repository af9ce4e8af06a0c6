//! Encoding: H.264 with libx264 (zero-latency tuning, no B-frames, key frames only where the
//! cutter asks) and AAC with FFmpeg's native encoder, plus the conversions that bring any
//! input to the encoders' formats (scaling to the output size and YUV 4:2:0, resampling to
//! 48 kHz stereo float).

use std::collections::VecDeque;

use ffmpeg_next::{
    self as ffmpeg, ChannelLayout, Dictionary, Packet, Rational, codec, encoder, format, frame,
    picture, software,
};

/// Audio sample rate of every channel.
pub const AUDIO_RATE: u32 = 48_000;

/// What can go wrong while encoding.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The FFmpeg build lacks an encoder.
    #[error("FFmpeg has no {0} encoder (Debian's libavcodec has libx264 and aac)")]
    MissingEncoder(&'static str),
    /// FFmpeg refused an operation.
    #[error("{what}: {source}")]
    Ffmpeg {
        /// The operation.
        what: &'static str,
        /// FFmpeg's error.
        source: ffmpeg::Error,
    },
}

fn ff(what: &'static str) -> impl FnOnce(ffmpeg::Error) -> EncodeError {
    move |source| EncodeError::Ffmpeg { what, source }
}

/// Video output settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoSettings {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Target bit rate in bit/s; also the VBV rate and one second of buffer.
    pub bitrate: u32,
    /// x264 preset (`ultrafast` .. `veryslow`).
    pub preset: String,
    /// Key-frame interval in frames (a group).
    pub keyint: u32,
    /// Constant bit rate: x264 pads with filler data up to the bit rate, so simple pictures
    /// (the test pattern) cost the network what real programmes do.
    pub cbr: bool,
}

/// libx264 behind FFmpeg, producing one packet per frame without delay.
pub struct VideoEncoder {
    enc: encoder::Video,
    time_base: Rational,
    scaler: Option<software::scaling::Context>,
    settings: VideoSettings,
}

impl std::fmt::Debug for VideoEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoEncoder")
            .field("settings", &self.settings)
            .finish()
    }
}

impl VideoEncoder {
    /// Opens libx264 with these settings.
    pub fn new(settings: &VideoSettings) -> Result<Self, EncodeError> {
        let codec =
            encoder::find_by_name("libx264").ok_or(EncodeError::MissingEncoder("libx264"))?;
        let mut enc = codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(ff("video encoder context"))?;
        let time_base = Rational::new(1, settings.fps as i32);
        enc.set_width(settings.width);
        enc.set_height(settings.height);
        enc.set_format(format::Pixel::YUV420P);
        enc.set_time_base(time_base);
        enc.set_frame_rate(Some(Rational::new(settings.fps as i32, 1)));
        enc.set_bit_rate(settings.bitrate as usize);
        enc.set_max_bit_rate(settings.bitrate as usize);
        enc.set_gop(settings.keyint);
        enc.set_max_b_frames(0);
        enc.set_flags(codec::Flags::GLOBAL_HEADER);
        let kbit = settings.bitrate / 1000;
        let mut options = Dictionary::new();
        options.set("preset", &settings.preset);
        options.set("tune", "zerolatency");
        options.set("forced-idr", "1");
        options.set(
            "x264-params",
            &format!(
                "keyint={k}:min-keyint={k}:scenecut=0:bframes=0:vbv-maxrate={kbit}:vbv-bufsize={kbit}{cbr}",
                k = settings.keyint,
                cbr = if settings.cbr { ":nal-hrd=cbr:filler=1" } else { "" },
            ),
        );
        let enc = enc.open_with(options).map_err(ff("open libx264"))?;
        Ok(Self {
            enc,
            time_base,
            scaler: None,
            settings: settings.clone(),
        })
    }

    /// The encoder's time base: one frame.
    pub fn time_base(&self) -> Rational {
        self.time_base
    }

    /// Stream parameters for the muxer.
    pub fn parameters(&self) -> codec::Parameters {
        codec::Parameters::from(&*self.enc)
    }

    /// Brings a decoded frame of any size and format to the output size and YUV 4:2:0.
    pub fn convert(&mut self, input: &frame::Video) -> Result<frame::Video, EncodeError> {
        let (w, h) = (self.settings.width, self.settings.height);
        if input.format() == format::Pixel::YUV420P && input.width() == w && input.height() == h {
            return Ok(input.clone());
        }
        let stale = self.scaler.as_ref().is_none_or(|s| {
            let i = s.input();
            i.format != input.format() || i.width != input.width() || i.height != input.height()
        });
        if stale {
            self.scaler = Some(
                software::scaling::Context::get(
                    input.format(),
                    input.width(),
                    input.height(),
                    format::Pixel::YUV420P,
                    w,
                    h,
                    software::scaling::Flags::BILINEAR,
                )
                .map_err(ff("scaler"))?,
            );
        }
        let mut out = frame::Video::empty();
        self.scaler
            .as_mut()
            .expect("set above")
            .run(input, &mut out)
            .map_err(ff("scale"))?;
        Ok(out)
    }

    /// Encodes a frame of the output size and format at frame slot `slot`; a key frame when
    /// `key`. Returns the packets ready (one per frame with zero-latency tuning), each with
    /// its duration set (FFmpeg 5.1's libx264 wrapper leaves it 0).
    pub fn encode(
        &mut self,
        frame: &mut frame::Video,
        slot: i64,
        key: bool,
    ) -> Result<Vec<Packet>, EncodeError> {
        frame.set_pts(Some(slot));
        frame.set_kind(if key {
            picture::Type::I
        } else {
            picture::Type::None
        });
        self.enc
            .send_frame(frame)
            .map_err(ff("send frame to libx264"))?;
        self.receive()
    }

    fn receive(&mut self) -> Result<Vec<Packet>, EncodeError> {
        let mut out = Vec::new();
        loop {
            let mut packet = Packet::empty();
            match self.enc.receive_packet(&mut packet) {
                Ok(()) => {
                    packet.set_duration(1);
                    out.push(packet);
                }
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                    return Ok(out);
                }
                Err(ffmpeg::Error::Eof) => return Ok(out),
                Err(e) => return Err(ff("receive packet from libx264")(e)),
            }
        }
    }
}

/// AAC-LC, stereo, 48 kHz, fed from a FIFO of planar float samples so that any input chunking
/// becomes the encoder's fixed 1024-sample frames.
pub struct AudioEncoder {
    enc: encoder::Audio,
    frame_size: usize,
    fifo: [VecDeque<f32>; 2],
    /// Samples handed to the encoder so far: the next frame's time stamp.
    next_pts: i64,
    resampler: Option<software::resampling::Context>,
}

impl std::fmt::Debug for AudioEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioEncoder")
            .field("next_pts", &self.next_pts)
            .field("queued", &self.fifo[0].len())
            .finish()
    }
}

impl AudioEncoder {
    /// Opens the AAC encoder at `bitrate` bit/s.
    pub fn new(bitrate: u32) -> Result<Self, EncodeError> {
        let codec = encoder::find(codec::Id::AAC).ok_or(EncodeError::MissingEncoder("aac"))?;
        let mut enc = codec::context::Context::new_with_codec(codec)
            .encoder()
            .audio()
            .map_err(ff("audio encoder context"))?;
        enc.set_rate(AUDIO_RATE as i32);
        enc.set_channel_layout(ChannelLayout::STEREO);
        enc.set_format(format::Sample::F32(format::sample::Type::Planar));
        enc.set_bit_rate(bitrate as usize);
        enc.set_time_base(Rational::new(1, AUDIO_RATE as i32));
        enc.set_flags(codec::Flags::GLOBAL_HEADER);
        let enc = enc.open().map_err(ff("open aac"))?;
        let frame_size = enc.frame_size().max(1) as usize;
        Ok(Self {
            enc,
            frame_size,
            fifo: [VecDeque::new(), VecDeque::new()],
            next_pts: 0,
            resampler: None,
        })
    }

    /// The encoder's time base: one sample.
    pub fn time_base(&self) -> Rational {
        Rational::new(1, AUDIO_RATE as i32)
    }

    /// Stream parameters for the muxer.
    pub fn parameters(&self) -> codec::Parameters {
        codec::Parameters::from(&*self.enc)
    }

    /// Samples per encoded frame (1024 for AAC).
    pub fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// Samples queued or encoded so far: where the next pushed sample sits on the timeline.
    pub fn position(&self) -> i64 {
        self.next_pts + self.fifo[0].len() as i64
    }

    /// Queues stereo samples.
    pub fn push(&mut self, left: &[f32], right: &[f32]) {
        self.fifo[0].extend(left);
        self.fifo[1].extend(right);
    }

    /// Queues `n` samples of silence.
    pub fn push_silence(&mut self, n: usize) {
        for ch in &mut self.fifo {
            ch.extend(std::iter::repeat_n(0.0, n));
        }
    }

    /// Drops up to `n` queued samples that were not yet encoded; returns how many went.
    pub fn drop_queued(&mut self, n: usize) -> usize {
        let n = n.min(self.fifo[0].len());
        for ch in &mut self.fifo {
            let keep = ch.len() - n;
            ch.truncate(keep);
        }
        n
    }

    /// Resamples a decoded frame of any format, layout and rate to the encoder's and queues it.
    pub fn push_frame(&mut self, input: &frame::Audio) -> Result<(), EncodeError> {
        let layout = if input.channel_layout().is_empty() {
            ChannelLayout::default(i32::from(input.channels()))
        } else {
            input.channel_layout()
        };
        let stale = self.resampler.as_ref().is_none_or(|r| {
            let i = r.input();
            i.format != input.format() || i.rate != input.rate() || i.channel_layout != layout
        });
        if stale {
            self.resampler = Some(
                software::resampling::Context::get(
                    input.format(),
                    layout,
                    input.rate(),
                    format::Sample::F32(format::sample::Type::Planar),
                    ChannelLayout::STEREO,
                    AUDIO_RATE,
                )
                .map_err(ff("resampler"))?,
            );
        }
        let capacity = input.samples() * AUDIO_RATE as usize / input.rate().max(1) as usize + 256;
        let mut out = frame::Audio::new(
            format::Sample::F32(format::sample::Type::Planar),
            capacity,
            ChannelLayout::STEREO,
        );
        let mut input = input.clone();
        input.set_channel_layout(layout);
        self.resampler
            .as_mut()
            .expect("set above")
            .run(&input, &mut out)
            .map_err(ff("resample"))?;
        let n = out.samples();
        self.push(&out.plane::<f32>(0)[..n], &out.plane::<f32>(1)[..n]);
        Ok(())
    }

    /// Encodes what is queued (padded with silence to a whole frame) and drains the encoder.
    /// The encoder cannot be used afterwards.
    pub fn finish(&mut self) -> Result<Vec<Packet>, EncodeError> {
        let partial = self.fifo[0].len() % self.frame_size;
        if partial > 0 {
            self.push_silence(self.frame_size - partial);
        }
        let mut out = self.drain()?;
        self.enc.send_eof().map_err(ff("flush aac"))?;
        self.receive_into(&mut out)?;
        Ok(out)
    }

    fn receive_into(&mut self, out: &mut Vec<Packet>) -> Result<(), EncodeError> {
        loop {
            let mut packet = Packet::empty();
            match self.enc.receive_packet(&mut packet) {
                Ok(()) => out.push(packet),
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                    return Ok(());
                }
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(e) => return Err(ff("receive packet from aac")(e)),
            }
        }
    }

    /// Encodes every whole frame queued; returns the packets ready, time stamps in samples.
    pub fn drain(&mut self) -> Result<Vec<Packet>, EncodeError> {
        let mut out = Vec::new();
        while self.fifo[0].len() >= self.frame_size {
            let mut frame = frame::Audio::new(
                format::Sample::F32(format::sample::Type::Planar),
                self.frame_size,
                ChannelLayout::STEREO,
            );
            frame.set_rate(AUDIO_RATE);
            for (ch, fifo) in self.fifo.iter_mut().enumerate() {
                for (dst, src) in frame
                    .plane_mut::<f32>(ch)
                    .iter_mut()
                    .zip(fifo.drain(..self.frame_size))
                {
                    *dst = src;
                }
            }
            frame.set_pts(Some(self.next_pts));
            self.next_pts += self.frame_size as i64;
            self.enc
                .send_frame(&frame)
                .map_err(ff("send frame to aac"))?;
            self.receive_into(&mut out)?;
        }
        Ok(out)
    }
}
