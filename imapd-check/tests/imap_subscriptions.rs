//! SUBSCRIBE, UNSUBSCRIBE and LSUB, from many sessions at once: every
//! change lands (the store serializes them under the user's name lock).

mod imap_common;

use imap_common::*;

#[test]
fn concurrent_subscribes_are_all_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    seed_store(&spool, "alice");
    const N: usize = 12;
    std::thread::scope(|sc| {
        for i in 0..N {
            let spool = &spool;
            sc.spawn(move || {
                let mut c = Client::spawn(spool, "alice");
                for j in 0..3 {
                    c.ok(&format!("SUBSCRIBE s{i}-{j}"));
                }
                c.ok(&format!("UNSUBSCRIBE s{i}-1"));
                c.ok("LOGOUT");
            });
        }
    });
    let mut c = Client::spawn(&spool, "alice");
    let lines = c.ok("LSUB \"\" *");
    let mut got: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("* LSUB "))
        .map(|l| l.rsplit(' ').next().unwrap().trim_matches('"').to_string())
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..N)
        .flat_map(|i| [format!("s{i}-0"), format!("s{i}-2")])
        .collect();
    want.sort();
    assert_eq!(got, want, "{lines:?}");
    c.ok("LOGOUT");
}
