//! `omnicloud image pull REF`: pulls into the local store with the same client, settings
//! and checks as a node (`container::registry::pull`), reading `[registries]` from the
//! node config (`--config`, `OMNICLOUD_CONFIG`). On a terminal, one progress bar per
//! blob (bytes); `-o json` prints the pulled image as JSON instead.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{output, Format};
use crate::client::ClientError;
use crate::container::registry::{self, Progress, PullRequest};
use crate::container::store::ImageStore;

/// One bar per blob under a [`MultiProgress`] on stderr.
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn new(visible: bool) -> Bars {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Bars {
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
        }
    }
}

fn short(digest: &str) -> String {
    digest
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

impl Progress for Bars {
    fn blob(&self, digest: &str, size: u64, cached: bool) {
        let bar = self.multi.add(ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(short(digest));
        if cached {
            bar.set_position(size);
            bar.finish_with_message("already in the store");
        }
        self.bars
            .lock()
            .expect("not poisoned")
            .insert(digest.to_string(), bar);
    }

    fn advance(&self, digest: &str, bytes: u64) {
        if let Some(b) = self.bars.lock().expect("not poisoned").get(digest) {
            b.inc(bytes);
        }
    }

    fn done(&self, digest: &str) {
        if let Some(b) = self.bars.lock().expect("not poisoned").get(digest) {
            b.finish_with_message("verified");
        }
    }
}

pub fn run(
    reference: &str,
    config: Option<PathBuf>,
    store: &ImageStore,
    output_format: Format,
) -> Result<(), ClientError> {
    let settings = crate::config::load_registries(config.as_deref())
        .map_err(|e| ClientError::Other(e.to_string()))?;
    let json = matches!(output_format, Format::Json | Format::Yaml);
    let visible = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bars = Arc::new(Bars::new(visible));
    let request = PullRequest {
        name: reference,
        settings: &settings,
        secrets: &[],
        progress: Some(bars.clone()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Other(format!("starting a runtime: {e}")))?;
    let pulled = runtime
        .block_on(registry::pull(store, &request))
        .map_err(|e| ClientError::Other(crate::error_chain(&e)))?;
    let _ = bars.multi.clear();
    let value = serde_json::to_value(&pulled).expect("JSON");
    match output_format {
        Format::Json => output::print_json(&value),
        Format::Yaml => output::print_yaml(&value),
        _ => println!(
            "pulled {} ({}, {} downloaded) from {}, {}",
            pulled.info.name,
            output::bytes(pulled.info.size),
            output::bytes(pulled.downloaded),
            pulled.endpoint,
            pulled.info.digest
        ),
    }
    Ok(())
}
