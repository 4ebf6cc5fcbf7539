//! Opus decoding of one link at the output rate and channel count, with the
//! OpusHead output gain applied inside libopus (`OPUS_SET_GAIN`).
//!
//! - Channel mapping family 0 (mono or stereo) uses audiopus's single-stream
//!   decoder created with the requested channel count: libopus itself mixes a
//!   stereo stream down to mono or spreads mono to both channels, and its
//!   16-bit output (soft-clipped, rounded) is used as is.
//! - Family 1 (1 to 8 channels) uses libopus's multistream decoder through the
//!   small safe wrapper `MsDecoder` below, decodes to float and goes through
//!   the matrices of [`super::downmix`].

use std::ffi::c_int;
use std::ptr::NonNull;

use audiopus::coder::Decoder;
use audiopus::{Channels, SampleRate};
use audiopus_sys as ffi;

use super::downmix;
use super::error::CodecError;
use super::head::{OpusHead, MAX_PACKET_SAMPLES_48K};

/// A libopus multistream decoder (`OpusMSDecoder`), owned.
pub(crate) struct MsDecoder {
    ptr: NonNull<ffi::OpusMSDecoder>,
    channels: usize,
}

// SAFETY: the decoder state is plain memory owned by this value; libopus keeps
// no thread-local or global state for it (it is built without
// NONTHREADSAFE_PSEUDOSTACK), so moving it to another thread is sound.
unsafe impl Send for MsDecoder {}

impl MsDecoder {
    /// Creates a decoder for the stream layout of `head` at `rate` Hz (one of
    /// the rates libopus supports).
    pub fn new(rate: u32, head: &OpusHead) -> Result<MsDecoder, CodecError> {
        let channels = usize::from(head.channels);
        if head.mapping.len() != channels {
            return Err(CodecError::Internal(
                "OpusHead mapping table has the wrong length".into(),
            ));
        }
        let rate =
            i32::try_from(rate).map_err(|_| CodecError::BadParameter(format!("rate {rate}")))?;
        let mut err: c_int = 0;
        // SAFETY: `mapping` holds exactly `channels` bytes as libopus reads,
        // `err` is a valid place for the error code; libopus validates the
        // stream counts and mapping values itself and returns null on error.
        let raw = unsafe {
            ffi::opus_multistream_decoder_create(
                rate,
                c_int::from(head.channels),
                c_int::from(head.streams),
                c_int::from(head.coupled),
                head.mapping.as_ptr(),
                &mut err,
            )
        };
        match NonNull::new(raw) {
            Some(ptr) if err == ffi::OPUS_OK => Ok(MsDecoder { ptr, channels }),
            other => {
                if let Some(ptr) = other {
                    // SAFETY: created above, not used afterwards.
                    unsafe { ffi::opus_multistream_decoder_destroy(ptr.as_ptr()) };
                }
                Err(CodecError::InvalidStream(format!(
                    "bad OpusHead: libopus refuses its channel layout ({} channels, {} streams, {} \
                     coupled): {}",
                    head.channels,
                    head.streams,
                    head.coupled,
                    opus_error_text(err)
                )))
            }
        }
    }

    /// Sets the output gain in Q7.8 dB (the OpusHead field).
    pub fn set_gain(&mut self, gain_q8: i16) -> Result<(), CodecError> {
        // SAFETY: OPUS_SET_GAIN takes one opus_int32 argument, passed as int.
        let ret = unsafe {
            ffi::opus_multistream_decoder_ctl(
                self.ptr.as_ptr(),
                ffi::OPUS_SET_GAIN_REQUEST,
                c_int::from(gain_q8),
            )
        };
        if ret == ffi::OPUS_OK {
            Ok(())
        } else {
            Err(CodecError::Internal(format!(
                "OPUS_SET_GAIN failed: {}",
                opus_error_text(ret)
            )))
        }
    }

    /// Decodes `packet` into interleaved float `out` (room for `out.len() /
    /// channels` frames); returns the number of frames, or libopus's reason.
    pub fn decode_float(&mut self, packet: &[u8], out: &mut [f32]) -> Result<usize, String> {
        let len = i32::try_from(packet.len()).map_err(|_| "packet too large".to_string())?;
        let frames = c_int::try_from(out.len() / self.channels)
            .map_err(|_| "buffer too large".to_string())?;
        // SAFETY: `packet` is valid for `len` bytes and `out` for `frames *
        // channels` floats; libopus writes at most that much.
        let ret = unsafe {
            ffi::opus_multistream_decode_float(
                self.ptr.as_ptr(),
                packet.as_ptr(),
                len,
                out.as_mut_ptr(),
                frames,
                0,
            )
        };
        usize::try_from(ret).map_err(|_| opus_error_text(ret))
    }
}

impl Drop for MsDecoder {
    fn drop(&mut self) {
        // SAFETY: the pointer came from opus_multistream_decoder_create and is
        // destroyed exactly once.
        unsafe { ffi::opus_multistream_decoder_destroy(self.ptr.as_ptr()) }
    }
}

/// libopus's description of an error code.
fn opus_error_text(code: c_int) -> String {
    // SAFETY: opus_strerror returns a pointer to a static NUL-terminated string
    // for any code.
    let text = unsafe { std::ffi::CStr::from_ptr(ffi::opus_strerror(code)) };
    text.to_string_lossy().into_owned()
}

enum Kind {
    Single(Decoder),
    Multi {
        dec: MsDecoder,
        in_channels: usize,
        matrix: Vec<f32>,
        buf: Vec<f32>,
    },
}

/// Decoder for one link: packets in, interleaved 16-bit frames at the output
/// rate and channel count out.
pub struct LinkDecoder {
    kind: Kind,
    out_channels: usize,
    max_frames: usize,
}

impl LinkDecoder {
    /// Sets up decoding of a stream described by `head` to `rate` Hz and
    /// `channels` (1 or 2), with the header's output gain.
    pub fn new(head: &OpusHead, rate: u32, channels: u8) -> Result<LinkDecoder, CodecError> {
        let sample_rate = i32::try_from(rate)
            .ok()
            .and_then(|r| <SampleRate as audiopus::TryFrom<i32>>::try_from(r).ok())
            .ok_or_else(|| CodecError::BadParameter(format!("unsupported rate {rate}")))?;
        let out_channels = usize::from(channels);
        let max_frames =
            usize::try_from(u64::from(MAX_PACKET_SAMPLES_48K) * u64::from(rate) / 48_000)
                .map_err(|_| CodecError::Internal("frame count overflow".into()))?;
        let kind = if head.mapping_family == 0 {
            let ch = match channels {
                1 => Channels::Mono,
                2 => Channels::Stereo,
                other => {
                    return Err(CodecError::BadParameter(format!(
                        "channels must be 1 or 2, got {other}"
                    )))
                }
            };
            let dec = Decoder::new(sample_rate, ch)
                .map_err(|e| CodecError::Internal(format!("cannot create an Opus decoder: {e}")))?;
            if head.output_gain != 0 {
                dec.set_gain(i32::from(head.output_gain))
                    .map_err(|e| CodecError::Internal(format!("OPUS_SET_GAIN failed: {e}")))?;
            }
            Kind::Single(dec)
        } else {
            let in_channels = usize::from(head.channels);
            let matrix = downmix::matrix(in_channels, out_channels).ok_or(
                CodecError::UnsupportedChannelMapping {
                    family: head.mapping_family,
                    channels: head.channels,
                },
            )?;
            let mut dec = MsDecoder::new(rate, head)?;
            if head.output_gain != 0 {
                dec.set_gain(head.output_gain)?;
            }
            Kind::Multi {
                dec,
                in_channels,
                matrix,
                buf: vec![0.0; max_frames * in_channels],
            }
        };
        Ok(LinkDecoder {
            kind,
            out_channels,
            max_frames,
        })
    }

    /// The most frames one packet can decode to at the output rate; `decode`
    /// needs room for this many frames.
    pub fn max_frames(&self) -> usize {
        self.max_frames
    }

    /// Decodes one packet into `out` (interleaved, room for [`Self::max_frames`]
    /// frames) and returns the number of frames, or the decoder's reason for
    /// rejecting the packet.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, String> {
        let room = (self.max_frames * self.out_channels).min(out.len());
        let out = &mut out[..room];
        match &mut self.kind {
            Kind::Single(dec) => dec
                .decode(Some(packet), out, false)
                .map_err(|e| e.to_string()),
            Kind::Multi {
                dec,
                in_channels,
                matrix,
                buf,
            } => {
                let frames = dec.decode_float(packet, buf)?;
                let used = frames
                    .checked_mul(*in_channels)
                    .filter(|&n| n <= buf.len() && frames * self.out_channels <= out.len())
                    .ok_or("decoder output does not fit its buffer")?;
                downmix::apply(matrix, *in_channels, self.out_channels, &buf[..used], out);
                Ok(frames)
            }
        }
    }
}
