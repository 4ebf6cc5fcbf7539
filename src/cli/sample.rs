//! `opusgate sample`: writes a synthetic speech-like Ogg Opus clip, so anyone
//! can try the service without owning an Opus file, and tests can make
//! fixtures. Defaults match the real client's streams: 16 kHz mono, 20 ms
//! frames, VOIP, VBR with DTX, one packet per page, about 24 kbit/s.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::codec::{encode_sample, SampleOptions};

/// Arguments of `opusgate sample`.
#[derive(Debug, clap::Args)]
pub struct SampleArgs {
    /// Length of the clip in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Sample rate of the synthetic signal fed to the encoder: 8000, 12000,
    /// 16000, 24000 or 48000.
    #[arg(long, default_value_t = 16000)]
    pub rate: u32,
    /// Channels: 1 or 2.
    #[arg(long, default_value_t = 1)]
    pub channels: u8,
    /// Target bitrate in bits per second.
    #[arg(long, value_name = "BITS_PER_SECOND", default_value_t = 24000)]
    pub bitrate: i32,
    /// Seed of the synthetic signal: different seeds give different clips.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Frame duration in milliseconds: 2.5, 5, 10, 20, 40, 60, 80, 100 or 120.
    #[arg(long, default_value_t = 20.0)]
    pub frame_ms: f32,
    /// Constant bitrate instead of VBR.
    #[arg(long)]
    pub cbr: bool,
    /// Turn discontinuous transmission off.
    #[arg(long)]
    pub no_dtx: bool,
    /// Opus packets per Ogg page.
    #[arg(long, default_value_t = 1)]
    pub packets_per_page: u16,
    /// Output file; `-` writes standard output.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: PathBuf,
}

/// Runs `opusgate sample`.
pub fn run(args: SampleArgs) -> ExitCode {
    let opts = SampleOptions {
        seconds: args.seconds,
        rate: args.rate,
        channels: args.channels,
        bitrate: args.bitrate,
        seed: args.seed,
        frame_ms: args.frame_ms,
        vbr: !args.cbr,
        dtx: !args.no_dtx,
        packets_per_page: args.packets_per_page,
    };
    let bytes = match encode_sample(&opts) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("opusgate sample: {e}");
            return ExitCode::from(if e.code() == "bad_parameter" { 2 } else { 1 });
        }
    };
    let written = if args.output.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(&bytes).and_then(|()| out.flush())
    } else {
        std::fs::write(&args.output, &bytes)
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "opusgate sample: cannot write {}: {e}",
                args.output.display()
            );
            ExitCode::FAILURE
        }
    }
}
