//! The resource verbs' bodies: `apply` (with `--wait`) and `get` (one object, a list, or a
//! watch).

use std::io::Read;

use serde_json::Value;

use super::{collection_path, object_path, output, urlencode, wait, Format};
use crate::client::{Client, ClientError};
use crate::model::Kind;

pub fn read_input(file: &str) -> Result<String, ClientError> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| ClientError::Other(format!("reading stdin: {e}")))?;
        Ok(s)
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| ClientError::Other(format!("reading {file}: {e}")))
    }
}

pub fn apply(
    client: &Client,
    files: &[String],
    namespace: Option<String>,
    output: Format,
    wait: &wait::WaitArgs,
) -> Result<(), ClientError> {
    let body: Vec<String> = files
        .iter()
        .map(|f| read_input(f))
        .collect::<Result<_, _>>()?;
    let body = body.join("\n---\n");
    let path = match &namespace {
        Some(ns) => format!("/v1/apply?namespace={ns}"),
        None => "/v1/apply".to_string(),
    };
    let result = client.send("POST", &path, "application/yaml", &body)?;
    for item in result["items"].as_array().into_iter().flatten() {
        for w in item["warnings"].as_array().into_iter().flatten() {
            eprintln!(
                "warning: {}/{}: {}",
                item["kind"].as_str().unwrap_or("?").to_lowercase(),
                item["name"].as_str().unwrap_or("?"),
                w.as_str().unwrap_or_default()
            );
        }
    }
    match output {
        Format::Json => output::print_json(&result),
        Format::Yaml => output::print_yaml(&result),
        _ => {
            for item in result["items"].as_array().into_iter().flatten() {
                println!(
                    "{}/{} {}",
                    item["kind"].as_str().unwrap_or("?").to_lowercase(),
                    item["name"].as_str().unwrap_or("?"),
                    item["action"].as_str().unwrap_or("?")
                );
            }
        }
    }
    if wait.wait {
        let targets: Vec<wait::Target> = result["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| {
                Some(wait::Target {
                    kind: Kind::parse(i["kind"].as_str()?)?,
                    namespace: i["namespace"].as_str().unwrap_or("default").to_string(),
                    name: i["name"].as_str()?.to_string(),
                })
            })
            .collect();
        wait::wait(client, &targets, wait.timeout)?;
    }
    Ok(())
}

pub fn get_one(
    client: &Client,
    kind: Kind,
    name: &str,
    ns: &str,
    format: Format,
) -> Result<(), ClientError> {
    let o = client.get_json(&object_path(kind, Some(ns), name))?;
    match format {
        Format::Json => output::print_json(&o),
        Format::Yaml => output::print_yaml(&o),
        f => {
            let wide = f == Format::Wide;
            println!(
                "{}",
                output::table(
                    &output::columns(kind, wide),
                    vec![output::row(kind, &o, wide)]
                )
            );
        }
    }
    Ok(())
}

pub fn get_list(
    client: &Client,
    kind: Kind,
    ns: Option<&str>,
    selector: Option<&str>,
    format: Format,
    watch: bool,
) -> Result<(), ClientError> {
    let mut path = collection_path(kind, ns);
    if let Some(sel) = selector {
        path.push_str(&format!("?labelSelector={}", urlencode(sel)));
    }
    let list = client.get_json(&path)?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let all_ns = ns.is_none() && kind.namespaced();
    let wide = format == Format::Wide;
    let header = |kind| {
        let mut h = output::columns(kind, wide);
        if all_ns {
            h.insert(0, "NAMESPACE");
        }
        h
    };
    let row_of = |o: &Value| {
        let mut r = output::row(kind, o, wide);
        if all_ns {
            r.insert(
                0,
                o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        r
    };
    match format {
        Format::Json => output::print_json(&list),
        Format::Yaml => output::print_yaml(&list),
        _ if items.is_empty() && !watch => {
            eprintln!(
                "No {} found{}.",
                kind.plural(),
                ns.map(|n| format!(" in namespace {n}")).unwrap_or_default()
            )
        }
        _ => println!(
            "{}",
            output::table(&header(kind), items.iter().map(row_of).collect())
        ),
    }
    if !watch {
        return Ok(());
    }
    let revision: u64 = list["metadata"]["revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let mut wpath = format!("/v1/watch?since={}&kind={}", revision + 1, kind.plural());
    if let (Some(ns), true) = (ns, kind.namespaced()) {
        wpath.push_str(&format!("&namespace={ns}"));
    }
    if let Some(sel) = selector {
        wpath.push_str(&format!("&labelSelector={}", urlencode(sel)));
    }
    client.stream(&wpath, |event| {
        match format {
            Format::Json => println!("{event}"),
            Format::Yaml => {
                println!("---");
                output::print_yaml(&event)
            }
            _ if event["type"] == "ERROR" => {
                eprintln!("watch ended: {}", event["message"].as_str().unwrap_or(""))
            }
            _ => {
                let mut r = row_of(&event["object"]);
                r.push(event["type"].as_str().unwrap_or_default().to_string());
                let t = output::table(&[header(kind), vec!["EVENT"]].concat(), vec![r]);
                println!("{}", t.lines().nth(1).unwrap_or_default());
            }
        }
        true
    })
}
