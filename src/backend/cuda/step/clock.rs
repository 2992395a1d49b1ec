//! How long replayed decode steps take on the device and as the host sees
//! them, with `TANDEM_CUDA_STEP_CLOCK=1`: a pair of events around each
//! graph launch gives the device's time from the launch's start to its end,
//! and the host's clock from before the launch to the result in hand. Their
//! difference is what the host adds (uploads, launch, the wait's wake-up).
//! A summary per backend goes to stderr when the backend is dropped. Run it
//! with TANDEM_CUDA_AHEAD=0: a step launched ahead is not clocked.

use std::time::Instant;

use cudarc::driver::{result, sys};

use crate::backend::cuda::gpu::Gpu;

pub(super) struct StepClock {
    events: (sys::CUevent, sys::CUevent),
    started: Option<Instant>,
    /// Per clocked step: (device µs, host µs).
    samples: Vec<(f32, f32)>,
}

impl StepClock {
    /// A clock if TANDEM_CUDA_STEP_CLOCK asks for one.
    pub fn from_env() -> Option<Self> {
        if std::env::var("TANDEM_CUDA_STEP_CLOCK").map_or(true, |v| v != "1") {
            return None;
        }
        let flags = sys::CUevent_flags::CU_EVENT_DEFAULT;
        let events = (
            result::event::create(flags).ok()?,
            result::event::create(flags).ok()?,
        );
        Some(Self {
            events,
            started: None,
            samples: Vec::new(),
        })
    }

    /// Before the graph launch.
    pub fn start(&mut self, gpu: &Gpu) {
        self.started = Some(Instant::now());
        // SAFETY: an event of ours, recorded on the backend's stream.
        unsafe { result::event::record(self.events.0, gpu.cu_stream()) }.expect("event record");
    }

    /// After the launch, before its result is waited for.
    pub fn launched(&mut self, gpu: &Gpu) {
        // SAFETY: as in `start`.
        unsafe { result::event::record(self.events.1, gpu.cu_stream()) }.expect("event record");
    }

    /// Once the result is on the host (the stream has passed both events).
    pub fn stop(&mut self) {
        let Some(t) = self.started.take() else {
            return;
        };
        let host_us = t.elapsed().as_secs_f32() * 1e6;
        // SAFETY: both events were recorded and have completed: the caller
        // holds the step's downloaded result.
        let device_ms = unsafe {
            result::event::synchronize(self.events.1).expect("event synchronize");
            result::event::elapsed(self.events.0, self.events.1)
        }
        .unwrap_or(f32::NAN);
        tracing::trace!(device_us = device_ms * 1e3, host_us, "step clocked");
        self.samples.push((device_ms * 1e3, host_us));
    }

    fn summary(&self, be: u32) -> Option<String> {
        if self.samples.is_empty() {
            return None;
        }
        let q = |mut v: Vec<f32>| {
            v.sort_by(f32::total_cmp);
            let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
            let mean = v.iter().sum::<f32>() / v.len() as f32;
            format!(
                "mean {mean:.1} p10 {:.1} p50 {:.1} p90 {:.1}",
                at(0.1),
                at(0.5),
                at(0.9)
            )
        };
        let device: Vec<f32> = self.samples.iter().map(|s| s.0).collect();
        let host: Vec<f32> = self.samples.iter().map(|s| s.1).collect();
        let added: Vec<f32> = self.samples.iter().map(|s| s.1 - s.0).collect();
        Some(format!(
            "step clock be={be}: {} steps | device µs {} | host µs {} | host − device {}",
            self.samples.len(),
            q(device),
            q(host),
            q(added)
        ))
    }

    pub fn report(&self, be: u32) {
        if let Some(s) = self.summary(be) {
            eprintln!("{s}");
        }
    }
}

impl Drop for StepClock {
    fn drop(&mut self) {
        // SAFETY: our events, destroyed once.
        unsafe {
            let _ = result::event::destroy(self.events.0);
            let _ = result::event::destroy(self.events.1);
        }
    }
}
