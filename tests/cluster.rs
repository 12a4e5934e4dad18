//! The cluster with real processes on loopback: formation from one seed, three voters out
//! of five, leader failover with no acknowledged write lost, rejoin under the same name,
//! replacement of a voter that stays dead, and a node with the wrong token kept out.

mod common;

use std::time::Duration;

use common::{eventually, fixture, yaml_to_json, Cluster, TestNode, FAST_CLUSTER};

const DEPLOY: &str = "/v1/namespaces/default/deployments";

fn voters(roles: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    roles
        .iter()
        .filter(|(_, r)| *r == "leader" || *r == "voter")
        .map(|(n, _)| n.clone())
        .collect()
}

fn converged(c: &Cluster, alive: usize, want_voters: usize) -> bool {
    c.running().iter().all(|i| {
        let members = c.members(*i);
        members.values().filter(|s| *s == "alive").count() == alive
    }) && voters(&c.raft_roles(c.running()[0])).len() == want_voters
}

#[test]
fn five_nodes_form_one_cluster_with_three_voters() {
    let c = Cluster::start(5, FAST_CLUSTER);
    let ok = eventually(Duration::from_secs(30), || {
        converged(&c, 5, 3).then_some(())
    });
    assert!(
        ok.is_some(),
        "no convergence: members {:?}, raft {:?}",
        c.members(0),
        c.raft_roles(0)
    );
    // Every node answers with the same leader and sees every other node's metadata.
    let leaders: Vec<Option<usize>> = (0..5).map(|i| c.leader(i)).collect();
    assert!(
        leaders.iter().all(|l| l.is_some() && *l == leaders[0]),
        "{leaders:?}"
    );
    let (_, nodes) = c.nodes[4].api().get("/v1/nodes");
    for n in nodes["items"].as_array().unwrap() {
        assert!(n["cpuMillis"].as_u64().unwrap() >= 1000, "{n}");
        assert!(
            n["apiAddr"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{n}"
        );
    }
    // The CLI shows the same picture.
    let (ok, out, err) = c.nodes[2].cli(&["nodes"]);
    assert!(ok, "{err}");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "ADDRESS",
            "ROLES",
            "STATUS",
            "RAFT",
            "CPU",
            "MEMORY",
            "AGE",
            "CONDITIONS"
        ]
    );
    assert_eq!(
        out.lines().filter(|l| l.contains(" alive ")).count(),
        5,
        "{out}"
    );
    let (ok, out, _) = c.nodes[3].cli(&["bootstrap", "status"]);
    assert!(
        ok && out.contains("Orchestrators: 3 voting / 3 wanted"),
        "{out}"
    );
    // Any node takes writes (followers forward them) and serves consistent reads.
    for (i, node) in c.nodes.iter().enumerate() {
        let body = fixture("deployment.yaml").replace("web-frontend", &format!("via-{i}"));
        let (status, resp) = node.api().apply(&body);
        assert_eq!(status, 200, "write via node {i}: {resp}");
    }
    let (_, list) = c.nodes[1].api().get(&format!("{DEPLOY}?consistent=true"));
    assert_eq!(list["items"].as_array().unwrap().len(), 5);
}

#[test]
fn leader_kill9_fails_over_without_losing_writes_and_rejoins() {
    let mut c = Cluster::start(5, FAST_CLUSTER);
    assert!(eventually(Duration::from_secs(30), || converged(&c, 5, 3)
        .then_some(()))
    .is_some());
    let leader = c.leader(0).unwrap();
    let via = (leader + 1) % 5;
    let template = fixture("deployment.yaml");
    let mut acked = Vec::new();
    for i in 0..20 {
        let name = format!("before-{i}");
        let (status, _) = c.nodes[via]
            .api()
            .apply(&template.replace("web-frontend", &name));
        assert_eq!(status, 200);
        acked.push(name);
    }
    let old_id = c.nodes[leader].node_id.clone();
    c.nodes[leader].kill9();

    // A new leader takes over and writes through any survivor succeed again.
    let survivors: Vec<usize> = c.running();
    let new_leader = eventually(Duration::from_secs(20), || {
        c.leader(survivors[0]).filter(|l| *l != leader)
    });
    assert!(new_leader.is_some(), "no new leader");
    for &s in &survivors {
        let name = format!("after-via-{s}");
        let body = template.replace("web-frontend", &name);
        let ok = eventually(Duration::from_secs(15), || {
            (c.nodes[s].api().apply(&body).0 == 200).then_some(())
        });
        assert!(ok.is_some(), "write via survivor {s} never succeeded");
        acked.push(name);
    }
    // Everything acknowledged, before or after the kill, is there, intact.
    let (_, list) = c.nodes[survivors[1]]
        .api()
        .get(&format!("{DEPLOY}?consistent=true"));
    let items = list["items"].as_array().unwrap();
    for name in &acked {
        let obj = items
            .iter()
            .find(|o| o["metadata"]["name"] == name.as_str());
        let obj = obj.unwrap_or_else(|| panic!("acknowledged {name} lost"));
        assert_eq!(
            obj["spec"],
            yaml_to_json(&template.replace("web-frontend", name))["spec"],
            "{name} torn"
        );
    }

    // The killed node restarts (on new ports) and rejoins under its name and id.
    c.nodes[leader].restart();
    assert_eq!(c.nodes[leader].node_id, old_id);
    let name = c.nodes[leader].name.clone();
    let back = eventually(Duration::from_secs(30), || {
        let m = c.members(survivors[0]);
        let roles = c.raft_roles(survivors[0]);
        (m.get(&name).map(String::as_str) == Some("alive") && roles.contains_key(&name))
            .then_some(())
    });
    assert!(
        back.is_some(),
        "{name} did not rejoin: {:?} {:?}",
        c.members(survivors[0]),
        c.raft_roles(survivors[0])
    );
    // And it has caught up: its local state holds every write.
    let caught_up = eventually(Duration::from_secs(20), || {
        let (_, list) = c.nodes[leader].api().get(DEPLOY);
        (list["items"].as_array().map(|a| a.len()) == Some(acked.len())).then_some(())
    });
    assert!(caught_up.is_some(), "restarted node never caught up");
}

#[test]
fn a_voter_dead_for_good_is_replaced() {
    let mut c = Cluster::start(5, FAST_CLUSTER);
    assert!(eventually(Duration::from_secs(30), || converged(&c, 5, 3)
        .then_some(()))
    .is_some());
    let leader = c.leader(0).unwrap();
    let roles = c.raft_roles(leader);
    let victim_name = roles
        .iter()
        .find(|(_, r)| *r == "voter")
        .map(|(n, _)| n.clone())
        .unwrap();
    let victim = c.nodes.iter().position(|n| n.name == victim_name).unwrap();
    c.nodes[victim].kill9();
    // orchestrator_replace_after is 3s in FAST_CLUSTER: a learner takes the seat.
    let replaced = eventually(Duration::from_secs(30), || {
        let roles = c.raft_roles(leader);
        let v = voters(&roles);
        (v.len() == 3 && !v.contains(&victim_name)).then_some(v)
    });
    assert!(
        replaced.is_some(),
        "voter not replaced: {:?}",
        c.raft_roles(leader)
    );
    // The cluster still takes writes with its new voter set.
    let (status, _) = c.nodes[leader].api().apply(&fixture("deployment.yaml"));
    assert_eq!(status, 200);
}

#[test]
fn a_node_with_the_wrong_token_never_joins() {
    let c = Cluster::start(2, FAST_CLUSTER);
    let cfg = c.config.path().to_str().unwrap().to_string();
    // The right CA pin with another secret: the seed's join listener refuses it (the
    // gossip and RPC keys come from the secret too, so it could not talk there either).
    let pin = omnicloud::cluster::pki::JoinToken::parse(&c.token)
        .unwrap()
        .ca_hash;
    let wrong = format!("K10{pin}::not-the-secret");
    let (intruder, log) = TestNode::start_refused(
        "intruder",
        &[
            "--config",
            &cfg,
            "--join",
            &c.nodes[0].gossip,
            "--token",
            &wrong,
        ],
    );
    assert!(
        log.contains("secret is wrong"),
        "the intruder never said why:\n{log}"
    );
    assert!(
        !intruder.dir.join("tls/node.crt").exists(),
        "the intruder got a certificate"
    );
    assert!(
        c.nodes[0].log().contains("join exchange") || log.contains("refused the join"),
        "refusal not logged"
    );
    for i in 0..2 {
        let members = c.members(i);
        assert!(
            !members.contains_key("intruder"),
            "intruder became a member: {members:?}"
        );
        assert_eq!(members.len(), 2);
    }
}

/// Two of five hosts (the leader and a learner) are cut off by iptables in their network
/// namespaces: they cannot commit, the three others elect a leader and can; after healing,
/// everyone converges on the majority's history.
#[test]
fn a_cut_off_minority_cannot_commit_and_heals() {
    let Some(net) = common::netns::TestNet::new(5) else {
        return;
    };
    let c = Cluster::start_on(5, FAST_CLUSTER, Some(&net));
    assert!(eventually(Duration::from_secs(40), || converged(&c, 5, 3)
        .then_some(()))
    .is_some());
    let leader = c.leader(0).unwrap();
    let roles = c.raft_roles(leader);
    let learner = c
        .nodes
        .iter()
        .position(|n| roles.get(&n.name).map(String::as_str) == Some("learner"))
        .unwrap();
    let minority = [leader, learner];
    let majority: Vec<usize> = (0..5).filter(|i| !minority.contains(i)).collect();
    net.cut(&minority, &majority);

    // The majority elects a leader among its two voters and commits.
    let body = fixture("deployment.yaml").replace("web-frontend", "majority-write");
    let committed = eventually(Duration::from_secs(30), || {
        (c.nodes[majority[0]].api().apply(&body).0 == 200).then_some(())
    });
    assert!(committed.is_some(), "majority could not commit");
    // The old leader, alone with a learner, cannot.
    let minority_body = fixture("deployment.yaml").replace("web-frontend", "minority-write");
    let (status, err) = c.nodes[leader].api().apply(&minority_body);
    assert_ne!(status, 200, "minority committed: {err}");
    let (status, _) = c.nodes[learner].api().apply(&minority_body);
    assert_ne!(status, 200, "minority committed through the learner");

    net.heal();
    let healed = eventually(Duration::from_secs(40), || {
        minority
            .iter()
            .all(|i| {
                let (s, list) = c.nodes[*i].api().get(&format!("{DEPLOY}?consistent=true"));
                s == 200
                    && list["items"].as_array().is_some_and(|a| {
                        a.iter().any(|o| o["metadata"]["name"] == "majority-write")
                    })
            })
            .then_some(())
    });
    assert!(healed.is_some(), "minority never caught up after healing");
    assert!(eventually(Duration::from_secs(30), || converged(&c, 5, 3)
        .then_some(()))
    .is_some());
    let leaders: Vec<Option<usize>> = (0..5).map(|i| c.leader(i)).collect();
    assert!(leaders.iter().all(|l| *l == leaders[0]), "{leaders:?}");
}

/// Issue 13.2: a stopped single-node cluster restarted with `--join` and the token of
/// another running cluster took that cluster over (its higher term won, its snapshot
/// replaced their state). A data dir belongs to one cluster: its CA is not the one the
/// token pins, so the node refuses to start, naming both, before it sends anything (the
/// cluster-id check of gossip and RPC stays behind it), and the running cluster keeps its
/// state.
#[test]
fn a_node_with_another_clusters_data_is_refused_on_both_sides() {
    let c = Cluster::start(2, FAST_CLUSTER);
    let (status, _) = c.nodes[0].api().apply(&fixture("deployment.yaml"));
    assert_eq!(status, 200);
    let ours = c.status(0)["clusterId"].as_str().unwrap().to_string();
    assert_eq!(ours.len(), 32, "a cluster id is made at bootstrap");

    let cfg = c.config.path().to_str().unwrap().to_string();
    let mut other = TestNode::start_with("other", &["--config", &cfg]);
    let ns = "apiVersion: omnicloud.io/v1\nkind: Namespace\nmetadata:\n  name: theirs\n";
    assert_eq!(other.api().apply(ns).0, 200);
    let (_, st) = other.api().get("/v1/cluster/status");
    let theirs = st["clusterId"].as_str().unwrap().to_string();
    assert_ne!(ours, theirs);
    other.stop();
    other.set_args(&[
        "--config",
        &cfg,
        "--join",
        &c.nodes[0].gossip,
        "--token",
        &c.token,
    ]);
    // Its CA is not the one the token pins: it refuses to start, naming both hashes,
    // before it sends anything to the cluster.
    let log = other.run_to_exit();
    let pin = omnicloud::cluster::pki::JoinToken::parse(&c.token)
        .unwrap()
        .ca_hash;
    assert!(
        log.contains("the token belongs to another cluster") && log.contains(&pin),
        "the joiner never said why:\n{log}"
    );
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..2 {
        let members = c.members(i);
        assert!(!members.contains_key("other"), "admitted: {members:?}");
        assert_eq!(c.raft_roles(i).len(), 2, "the Raft group changed");
        assert_eq!(c.status(i)["clusterId"], ours.as_str());
    }
    let (status, _) = c.nodes[1]
        .api()
        .get("/v1/namespaces/default/deployments/web-frontend");
    assert_eq!(status, 200, "the running cluster lost its state");
    assert_eq!(c.nodes[1].api().get("/v1/namespaces/theirs").0, 404);
    // The refused node keeps its own data.
    other.set_args(&["--config", &cfg]);
    other.restart();
    assert_eq!(other.api().get("/v1/namespaces/theirs").0, 200);
}

/// Issue 13.6: a second process started with a name another live node holds was admitted,
/// ran that node's instances and made the real one flap. A name is owned by one node id.
#[test]
fn a_second_node_with_a_taken_name_is_refused() {
    let c = Cluster::start(2, FAST_CLUSTER);
    let cfg = c.config.path().to_str().unwrap().to_string();
    let taken = c.nodes[1].name.clone();
    let impostor = TestNode::start_opts(
        &taken,
        &[
            "--config",
            &cfg,
            "--join",
            &c.nodes[0].gossip,
            "--token",
            &c.token,
        ],
        false,
        None,
    );
    let told = eventually(Duration::from_secs(20), || {
        let log = impostor.log();
        (log.contains("refused by the cluster") && log.contains("--name")).then_some(())
    });
    assert!(
        told.is_some(),
        "the impostor was not told why:\n{}",
        impostor.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    let real_id = c.nodes[1].node_id.clone();
    for i in 0..2 {
        let members = c.members(i);
        assert_eq!(members.len(), 2, "{members:?}");
        assert_eq!(members[&taken], "alive");
        assert_eq!(
            c.raft_roles(i).len(),
            2,
            "the impostor became a Raft member"
        );
    }
    let (_, nodes) = c.nodes[0].api().get("/v1/nodes");
    let row = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == taken.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["nodeId"].as_str(), Some(real_id.as_str()), "{row}");
    assert!(
        !c.nodes[1]
            .log()
            .contains("rejoined under a new incarnation"),
        "the real node was made to flap"
    );
}
