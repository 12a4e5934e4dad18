//! `omnicloud image ...`: the node's local image store (import, list, remove) and moving
//! images to and from registries (`image pull`: [`super::pull`]).

use std::path::PathBuf;

use clap::Subcommand;

use super::{output, Format};
use crate::client::ClientError;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import images from an OCI layout (directory or tar) or a `docker save` archive.
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Node data dir (default: OMNICLOUD_DATA_DIR or the default data dir).
        #[arg(long, env = "OMNICLOUD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// List the images in the store.
    Ls {
        #[arg(long, env = "OMNICLOUD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Pull an image from a registry into the store (`nginx` is
    /// docker.io/library/nginx:latest; HTTPS unless the host is in registries.insecure).
    Pull {
        reference: String,
        /// Node config whose [registries] section applies (mirrors, CAs, credentials).
        #[arg(long, env = "OMNICLOUD_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "OMNICLOUD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Push an image of the store to a registry as REFERENCE (host:port/repo:tag).
    Push {
        name: String,
        reference: String,
        /// Node config whose [registries] section applies (CAs, credentials, insecure).
        #[arg(long, env = "OMNICLOUD_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "OMNICLOUD_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Remove an image and the blobs only it used.
    Rm {
        name: String,
        #[arg(long, env = "OMNICLOUD_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

pub fn run(cmd: ImageCommand) -> Result<(), ClientError> {
    use crate::container::store::ImageStore;
    let open = |dir: Option<PathBuf>| {
        let dir = dir
            .unwrap_or_else(crate::config::default_data_dir)
            .join("images");
        ImageStore::open(&dir).map_err(|e| ClientError::Other(e.one_line()))
    };
    let show = |images: &[crate::container::store::ImageInfo], output: Format| match output {
        Format::Json | Format::Yaml => {
            let v = serde_json::to_value(images).expect("JSON");
            if output == Format::Json {
                output::print_json(&v)
            } else {
                output::print_yaml(&v)
            }
        }
        _ => {
            let rows = images
                .iter()
                .map(|i| {
                    vec![
                        i.name.clone(),
                        i.digest.chars().take(19).collect(),
                        output::bytes(i.size),
                    ]
                })
                .collect();
            println!("{}", output::table(&["NAME", "DIGEST", "SIZE"], rows));
        }
    };
    match cmd {
        ImageCommand::Import {
            files,
            data_dir,
            output,
        } => {
            let store = open(data_dir)?;
            let mut all = Vec::new();
            for f in files {
                let imported = store.import(&f).map_err(|e| {
                    ClientError::Other(format!("{}: {}", f.display(), e.one_line()))
                })?;
                all.extend(imported);
            }
            show(&all, output);
        }
        ImageCommand::Ls { data_dir, output } => show(
            &open(data_dir)?
                .list()
                .map_err(|e| ClientError::Other(e.one_line()))?,
            output,
        ),
        ImageCommand::Pull {
            reference,
            config,
            data_dir,
            output,
        } => super::pull::run(&reference, config, &open(data_dir)?, output)?,
        ImageCommand::Push {
            name,
            reference,
            config,
            data_dir,
        } => {
            let store = open(data_dir)?;
            let settings = crate::config::load_registries(config.as_deref())
                .map_err(|e| ClientError::Other(e.to_string()))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| ClientError::Other(format!("starting a runtime: {e}")))?;
            let digest = runtime
                .block_on(crate::container::registry::push(
                    &store, &name, &reference, &settings,
                ))
                .map_err(|e| ClientError::Other(crate::error_chain(&e)))?;
            println!("pushed {name} to {reference} ({digest})");
        }
        ImageCommand::Rm { name, data_dir } => {
            let removed = open(data_dir)?
                .remove(&name)
                .map_err(|e| ClientError::Other(e.one_line()))?;
            println!("image {} removed", removed.name);
        }
    }
    Ok(())
}
