//! Property tests: random and malformed archives fed to `ImageStore::import` and to layer
//! unpacking. Whatever the input, nothing panics, nothing is written outside the
//! destination (the temp dir around it holds nothing new or changed), and no file outside
//! the archive is read (a canary planted beside it never shows up in the store).
//!
//! `PROPTEST_CASES` sets the number of cases (32 by default, to keep `cargo test` quick);
//! a longer run: `PROPTEST_CASES=5000 cargo test --release --lib container::proptests`.

use std::fs;
use std::path::Path;

use proptest::prelude::*;
use serde_json::json;
use tar::EntryType;

use super::image;
use super::store::ImageStore;
use super::testkit::{any_file_contains, gzip, layout_with, snapshot, tar, Raw};

/// Cases whose import succeeded (printed, to show the properties reach the success path).
static IMPORTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

const CANARY: &[u8] = b"CANARY:this-host-file-must-never-be-read-into-the-store";

fn config() -> ProptestConfig {
    let cases = crate::proptest_cases(32);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Names that matter to an importer or unpacker, and hostile ones.
fn name() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just("manifest.json".to_string()),
        Just("index.json".to_string()),
        Just("oci-layout".to_string()),
        Just("cfg.json".to_string()),
        Just("layer.tar".to_string()),
        Just("blobs".to_string()),
        Just("sha256".to_string()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just("".to_string()),
        Just("etc".to_string()),
        Just(".wh..wh..opq".to_string()),
        Just(".wh...".to_string()),
        Just(".wh.etc".to_string()),
        Just("outside".to_string()),
        Just("canary".to_string()),
        "[a-z.]{1,8}",
    ];
    (any::<bool>(), prop::collection::vec(part, 1..5)).prop_map(|(abs, parts)| {
        let joined = parts.join("/");
        if abs {
            format!("/{joined}")
        } else {
            joined
        }
    })
}

/// Link targets: inside, outside by `..`, absolute to the canary.
fn target(canary: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(canary.to_string()),
        Just("../canary".to_string()),
        Just("../../canary".to_string()),
        Just("../../../canary".to_string()),
        Just("../../../../canary".to_string()),
        Just("../../../../../canary".to_string()),
        Just("/".to_string()),
        name(),
    ]
}

fn json_doc(names: Vec<String>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(
            json!([{"Config": names[0], "RepoTags": ["p:1"], "Layers": &names[1..]}])
                .to_string()
                .into_bytes()
        ),
        Just(
            json!({"schemaVersion": 2, "manifests": [{"digest": names[0],
            "annotations": {"org.opencontainers.image.ref.name": "p:1"}}]})
            .to_string()
            .into_bytes()
        ),
        prop::collection::vec(any::<u8>(), 0..64),
        Just(b"{\"imageLayoutVersion\":\"1.0.0\"}".to_vec()),
    ]
}

fn entry(canary: &'static str) -> impl Strategy<Value = Raw> {
    let kind = prop_oneof![
        4 => Just(EntryType::Regular),
        2 => Just(EntryType::Directory),
        2 => Just(EntryType::Symlink),
        2 => Just(EntryType::Link),
        1 => Just(EntryType::Char),
        1 => Just(EntryType::Fifo),
        1 => Just(EntryType::GNUSparse),
    ];
    let names = prop::collection::vec(prop_oneof![name(), target(canary)], 1..4);
    let data = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        names.prop_flat_map(json_doc),
    ];
    (name(), kind, target(canary), data).prop_map(|(name, kind, link, data)| Raw {
        name: name.into_bytes(),
        kind,
        link: link.into_bytes(),
        data: if kind == EntryType::Regular {
            data
        } else {
            vec![]
        },
    })
}

/// A `docker save`-shaped head: manifest.json naming a config and layers by names that
/// may be hostile, the config, and a layer tar of random entries under the first name.
fn docker_head(canary: &'static str) -> impl Strategy<Value = Vec<Raw>> {
    (
        prop::collection::vec(prop_oneof![Just("l.tar".to_string()), target(canary)], 1..3),
        prop::collection::vec(entry(canary), 0..8),
    )
        .prop_map(|(layers, inner)| {
            let manifest = json!([{"Config": "cfg.json", "RepoTags": ["p:1"], "Layers": layers}]);
            vec![
                Raw::file("manifest.json", manifest.to_string().as_bytes()),
                Raw::file("cfg.json", br#"{"architecture":"amd64","os":"linux"}"#),
                Raw::file("l.tar", &tar(&inner)),
            ]
        })
}

/// An archive: maybe a docker-shaped head, random entries, maybe a nested layer tar,
/// maybe gzipped, maybe cut short and followed by junk.
fn archive(canary: &'static str) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::option::of(docker_head(canary)),
        prop::collection::vec(entry(canary), 0..12),
        prop::collection::vec(entry(canary), 0..6),
        any::<bool>(),
        prop::option::weighted(0.3, any::<prop::sample::Index>()),
        prop::collection::vec(any::<u8>(), 0..32),
    )
        .prop_map(|(head, mut outer, inner, gz, cut, junk)| {
            if !inner.is_empty() {
                outer.push(Raw::file("layer.tar", &tar(&inner)));
            }
            let mut entries = head.unwrap_or_default();
            entries.extend(outer);
            let mut bytes = tar(&entries);
            if gz {
                bytes = gzip(&bytes);
            }
            if let Some(i) = cut {
                bytes.truncate(i.index(bytes.len() + 1));
                bytes.extend_from_slice(&junk);
            }
            bytes
        })
}

/// A temp dir laid out as `outside/canary` beside `work/` (where the store lives); the
/// canary's absolute path is leaked so strategies can name it.
fn sandbox() -> (tempfile::TempDir, &'static str) {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("outside")).unwrap();
    fs::create_dir_all(tmp.path().join("work")).unwrap();
    let canary = tmp.path().join("outside/canary");
    fs::write(&canary, CANARY).unwrap();
    let path: &'static str = Box::leak(canary.to_str().unwrap().to_string().into_boxed_str());
    (tmp, path)
}

fn check_import(root: &Path, bytes: &[u8]) {
    let images = root.join("work/images");
    let store = ImageStore::open(&images).unwrap();
    let input = root.join("work/in.tar");
    fs::write(&input, bytes).unwrap();
    let before = snapshot(root, &[&images]);
    if store.import(&input).is_ok() {
        IMPORTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    assert_eq!(
        snapshot(root, &[&images]),
        before,
        "written outside the store"
    );
    assert!(!any_file_contains(&images, CANARY), "the canary was read");
    for e in fs::read_dir(&images).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".import-") && !name.starts_with(".blob-"),
            "{name} left behind"
        );
    }
    // Whatever was imported unpacks without reaching outside either.
    let layers = root.join("work/containers");
    for info in store.list().unwrap_or_default() {
        if let Ok(img) = image::open(&images, &info.name) {
            let _ = image::unpack_layers(&layers, &images, &img);
        }
    }
    assert_eq!(
        snapshot(root, &[&images, &layers]),
        before,
        "unpacking wrote outside"
    );
    assert!(
        !any_file_contains(&layers, CANARY),
        "a layer read the canary"
    );
}

fn check_layer(root: &Path, layer: Vec<u8>, gz: bool) {
    let layout = root.join("work/layout");
    layout_with(&layout, &[(layer, gz)]);
    let store = root.join("work/store");
    let before = snapshot(root, &[&store]);
    let img = image::open(&layout, "app:1").unwrap();
    let result = image::unpack_layers(&store, &layout, &img);
    assert_eq!(
        snapshot(root, &[&store]),
        before,
        "written outside the layer"
    );
    assert!(
        !any_file_contains(&store, CANARY),
        "the layer read the canary"
    );
    let cache = store.join("layers/sha256");
    for e in fs::read_dir(&cache).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(".tmp-"), "{name} left behind");
    }
    if result.is_err() {
        assert_eq!(
            fs::read_dir(&cache).unwrap().count(),
            0,
            "a refused layer cached"
        );
    }
}

#[test]
fn import_never_panics_writes_or_reads_outside() {
    let (tmp, canary) = sandbox();
    proptest!(config(), |(bytes in archive(canary))| {
        let _ = fs::remove_dir_all(tmp.path().join("work"));
        fs::create_dir_all(tmp.path().join("work")).unwrap();
        check_import(tmp.path(), &bytes);
    });
    let n = IMPORTED.load(std::sync::atomic::Ordering::Relaxed);
    println!("{n} of {} cases imported an image", config().cases);
}

#[test]
fn layer_unpack_never_panics_writes_or_reads_outside() {
    let (tmp, canary) = sandbox();
    let layer = (
        prop::collection::vec(entry(canary), 0..16),
        any::<bool>(),
        prop::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|(entries, gz, cut)| {
            let mut bytes = tar(&entries);
            if gz {
                bytes = gzip(&bytes);
            }
            if let Some(i) = cut {
                bytes.truncate(i.index(bytes.len() + 1));
            }
            (bytes, gz)
        });
    proptest!(config(), |((bytes, gz) in layer)| {
        let _ = fs::remove_dir_all(tmp.path().join("work"));
        fs::create_dir_all(tmp.path().join("work")).unwrap();
        check_layer(tmp.path(), bytes, gz);
    });
}
