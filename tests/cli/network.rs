//! `network: bridge`: each container has its own address on wharf's bridge, where the
//! host and other containers reach it. (Traffic goes only to containers this test made.)

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{ok, ps, wharf_at, write};
use crate::support::busybox_yaml;

/// The body of `GET /` from `address:8080`, once it answers (at most 20 s).
fn get(address: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = TcpStream::connect_timeout(
            &format!("{address}:8080").parse().expect("an address"),
            Duration::from_secs(2),
        )
        .and_then(|mut stream| {
            stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        });
        match answer {
            Ok(response) if response.starts_with("HTTP/1.") => {
                let (_, body) = response.split_once("\r\n\r\n").unwrap_or(("", ""));
                return body.to_owned();
            }
            other => assert!(
                Instant::now() < deadline,
                "{address}:8080 never answered: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The host sides of veth pairs wharf made (`wh` + 13 hex digits).
fn wharf_links() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .expect("/sys/class/net")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.len() == 15 && name.starts_with("wh"))
        .collect()
}

#[test]
fn bridge_replicas_have_their_own_addresses_and_reach_each_other() {
    let root = tempfile::tempdir().expect("root");
    let dir = tempfile::tempdir().expect("manifests");
    let links_before = wharf_links();
    write(
        dir.path(),
        "web.yaml",
        busybox_yaml(
            "web",
            "replicas: 2\nnetwork: bridge\nstop: {signal: KILL}\n\
             command: [/bin/sh, -c, 'mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www']\n",
        ),
    );
    ok(&wharf_at(
        root.path(),
        &["apply", "--yes", dir.path().to_str().expect("UTF-8")],
    ));

    let rows = ps(root.path());
    let addresses: Vec<String> = rows
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| row["address"].as_str().expect("an address").to_owned())
        .collect();
    assert_eq!(addresses.len(), 2, "{rows}");
    assert_ne!(addresses[0], addresses[1], "each replica has its own");
    for address in &addresses {
        let address: Ipv4Addr = address.parse().expect("IPv4");
        assert_eq!(address.octets()[..3], [10, 89, 0], "on wharf's subnet");
    }
    // Both replicas listen on port 8080: on a bridge they do not collide.
    assert_eq!(get(&addresses[0]), "web-0\n");
    assert_eq!(get(&addresses[1]), "web-1\n");
    // One container reaches the other by its address.
    let url = format!("http://{}:8080/", addresses[1]);
    let fetched = wharf_at(root.path(), &["exec", "web/0", "--", "wget", "-qO-", &url]);
    assert_eq!(ok(&fetched), "web-1\n");
    let status = ok(&wharf_at(root.path(), &["status"])).to_owned();
    assert!(status.contains(&addresses[0]), "{status}");

    // The bridge is the host's: another wharf root never gets an address in use.
    let other_root = tempfile::tempdir().expect("another root");
    let other_dir = tempfile::tempdir().expect("its manifests");
    write(
        other_dir.path(),
        "other.yaml",
        busybox_yaml(
            "other",
            "network: bridge\nstop: {signal: KILL}\ncommand: [sleep, '1000']\n",
        ),
    );
    ok(&wharf_at(
        other_root.path(),
        &["apply", "--yes", other_dir.path().to_str().expect("UTF-8")],
    ));
    let other = ps(other_root.path())[0]["address"]
        .as_str()
        .expect("an address")
        .to_owned();
    assert!(!addresses.contains(&other), "{other} is taken already");
    ok(&wharf_at(other_root.path(), &["down", "--all"]));

    ok(&wharf_at(root.path(), &["down", "--all"]));
    assert_eq!(wharf_links(), links_before, "no veth is left behind");
    // Removed containers give their addresses back.
    let left =
        std::fs::read_dir(root.path().join("containers")).map_or(0, |entries| entries.count());
    assert_eq!(left, 0);
    assert!(
        Path::new("/sys/class/net/wharf0").exists(),
        "the bridge stays"
    );
}
