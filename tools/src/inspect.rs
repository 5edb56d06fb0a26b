//! What `idx-inspect` shows, as JSON values (the `--json` output) and as
//! human tables. Everything here reads under a shared lock through
//! `storage::verify::with_raw_view`; nothing opens a file for writing.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use storage::format::{HF_DELETED, HF_SUPERSEDED, RECORD_SIZE, SLOT_OFFSETS};
use storage::mailbox::{STAGE_DIR, parse_message_file_name};
use storage::verify::{self, RawView, Report, Severity};
use storage::{Error, Header};

use crate::{UidSet, iso8601};

fn header_flag_names(f: u32) -> Vec<&'static str> {
    let mut v = Vec::new();
    if f & HF_SUPERSEDED != 0 {
        v.push("superseded");
    }
    if f & HF_DELETED != 0 {
        v.push("deleted");
    }
    if f & storage::format::HF_MOVE_OUT != 0 {
        v.push("move_out");
    }
    if f & storage::format::HF_MOVE_IN != 0 {
        v.push("move_in");
    }
    if f & storage::format::HF_UNORDERED != 0 {
        v.push("unordered");
    }
    v
}

fn header_fields(h: &Header) -> serde_json::Map<String, Value> {
    let v = json!({
        "generation": h.generation,
        "num_records": h.num_records,
        "exists": h.exists,
        "last_uid": h.last_uid,
        "uidvalidity": h.uidvalidity,
        "highestmodseq": h.highestmodseq,
        "inplace_modseq": h.inplace_modseq,
        "removed_modseq": h.removed_modseq,
        "total_bytes": h.total_bytes,
        "seen": h.seen,
        "deleted": h.deleted,
        "flagged": h.flagged,
        "meta_generation": h.meta_generation,
        "created": h.created,
        "created_iso": iso8601(h.created),
        "last_append": h.last_append,
        "last_append_iso": iso8601(h.last_append),
        "flags": header_flag_names(h.flags),
        "flags_raw": h.flags,
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!("json! object"),
    }
}

fn slot_json(view: &RawView, slot: usize) -> Value {
    match &view.slots[slot] {
        Ok(h) => json!({"slot": slot, "offset": SLOT_OFFSETS[slot], "valid": true,
                        "generation": h.generation, "num_records": h.num_records,
                        "flags": header_flag_names(h.flags)}),
        Err(e) => json!({"slot": slot, "offset": SLOT_OFFSETS[slot], "valid": false,
                         "error": e.what, "error_offset": SLOT_OFFSETS[slot] + e.offset as u64,
                         "field": verify::header_field_name(e.offset)}),
    }
}

/// `idx-inspect header`. `Ok(None)`-like case: when no slot is valid the
/// value has `"current_slot": null` and the caller exits 1.
pub fn header(view: &RawView) -> Value {
    let mut m = match &view.current {
        Ok(hr) => {
            let mut m = header_fields(&hr.header);
            m.insert("current_slot".into(), json!(hr.slot));
            m.insert("current_slot_offset".into(), json!(SLOT_OFFSETS[hr.slot]));
            m
        }
        Err(e) => {
            let mut m = serde_json::Map::new();
            m.insert("current_slot".into(), Value::Null);
            m.insert("error".into(), json!(e));
            m
        }
    };
    m.insert("index".into(), json!(view.index_path));
    m.insert("file_len".into(), json!(view.file_len));
    m.insert("records_in_file".into(), json!(view.records_in_file()));
    m.insert("format_version".into(), json!(storage::format::VERSION));
    m.insert("record_size".into(), json!(RECORD_SIZE));
    m.insert(
        "slots".into(),
        json!([slot_json(view, 0), slot_json(view, 1)]),
    );
    Value::Object(m)
}

pub fn header_human(v: &Value) -> String {
    let mut out = String::new();
    let row = |out: &mut String, k: &str, val: String| out.push_str(&format!("{k:<16} {val}\n"));
    row(
        &mut out,
        "index",
        format!(
            "{} ({} bytes, room for {} records)",
            s(&v["index"]),
            v["file_len"],
            v["records_in_file"]
        ),
    );
    match v["current_slot"].as_u64() {
        Some(slot) => row(
            &mut out,
            "current slot",
            format!("{slot} (offset {})", v["current_slot_offset"]),
        ),
        None => row(
            &mut out,
            "current slot",
            format!("NONE: {}", s(&v["error"])),
        ),
    }
    for sl in v["slots"].as_array().into_iter().flatten() {
        let desc = if sl["valid"] == true {
            format!(
                "valid, generation {}, {} records{}",
                sl["generation"],
                sl["num_records"],
                flags_suffix(&sl["flags"])
            )
        } else {
            format!(
                "invalid: {} (field {}, byte {})",
                s(&sl["error"]),
                s(&sl["field"]),
                sl["error_offset"]
            )
        };
        row(&mut out, &format!("slot {}", sl["slot"]), desc);
    }
    if v["current_slot"].is_null() {
        return out;
    }
    for k in [
        "generation",
        "num_records",
        "exists",
        "last_uid",
        "uidvalidity",
        "highestmodseq",
        "inplace_modseq",
        "removed_modseq",
        "total_bytes",
        "seen",
        "deleted",
        "flagged",
        "meta_generation",
    ] {
        row(&mut out, k, v[k].to_string());
    }
    row(
        &mut out,
        "created",
        format!("{} ({})", v["created"], s(&v["created_iso"])),
    );
    row(
        &mut out,
        "last_append",
        format!("{} ({})", v["last_append"], s(&v["last_append_iso"])),
    );
    let flags: Vec<String> = v["flags"].as_array().into_iter().flatten().map(s).collect();
    row(
        &mut out,
        "flags",
        if flags.is_empty() {
            "-".into()
        } else {
            flags.join(",")
        },
    );
    out
}

fn flags_suffix(v: &Value) -> String {
    let f: Vec<String> = v.as_array().into_iter().flatten().map(s).collect();
    if f.is_empty() {
        String::new()
    } else {
        format!(", flags {}", f.join(","))
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

/// `idx-inspect records`: one row per record; bad rows always included.
pub fn records(view: &RawView, uids: Option<&UidSet>, expunged: bool) -> Result<Value, Error> {
    let names: Vec<String> = view
        .meta
        .as_ref()
        .map(|m| m.keywords.clone())
        .unwrap_or_default();
    let mut rows = Vec::new();
    view.for_each_record(|raw| match &raw.record {
        Ok(r) => {
            if uids.is_some_and(|u| !u.contains(r.uid)) || (r.is_expunged() && !expunged) {
                return;
            }
            let mut flags: Vec<&str> = r.flags.names();
            if r.is_expunged() {
                flags.push("expunged");
            }
            let keywords: Vec<String> = r
                .keywords
                .iter()
                .map(|k| names.get(k).cloned().unwrap_or_else(|| format!("#{k}?")))
                .collect();
            rows.push(json!({
                "recno": raw.recno, "offset": raw.offset, "uid": r.uid,
                "flags": flags, "keywords": keywords,
                "internal_date": r.internal_date, "internal_date_iso": iso8601(r.internal_date),
                "internal_zone": r.internal_zone,
                "sent_date": r.sent_date, "size": r.size, "header_size": r.header_size,
                "message_crc": format!("{:08x}", r.message_crc), "modseq": r.modseq,
                "last_updated": r.last_updated, "crc_ok": true,
            }));
        }
        Err(e) => rows.push(json!({
            "recno": raw.recno, "offset": raw.offset, "crc_ok": false,
            "error": e.what, "error_offset": raw.offset + e.offset as u64,
            "field": verify::record_field_name(e.offset),
        })),
    })?;
    Ok(json!({"index": view.index_path, "records": rows}))
}

pub fn records_human(v: &Value) -> String {
    let mut out = format!(
        "{:>6} {:>8} {:<20} {:>10} {:>10} {:>8} {:<8} {:<30} {}\n",
        "recno", "uid", "internal date", "size", "modseq", "hdrsize", "crc", "flags", "keywords"
    );
    for r in v["records"].as_array().into_iter().flatten() {
        if r["crc_ok"] == true {
            let flags: Vec<String> = r["flags"].as_array().into_iter().flatten().map(s).collect();
            let kws: Vec<String> = r["keywords"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect();
            out.push_str(&format!(
                "{:>6} {:>8} {:<20} {:>10} {:>10} {:>8} {:<8} {:<30} {}\n",
                s(&r["recno"]),
                s(&r["uid"]),
                s(&r["internal_date_iso"]),
                s(&r["size"]),
                s(&r["modseq"]),
                s(&r["header_size"]),
                "ok",
                flags.join(" "),
                kws.join(" ")
            ));
        } else {
            out.push_str(&format!(
                "{:>6} {:>8} BAD at byte {} (field {}): {}\n",
                s(&r["recno"]),
                "?",
                s(&r["error_offset"]),
                s(&r["field"]),
                s(&r["error"])
            ));
        }
    }
    out
}

/// `idx-inspect stat`: counts and sizes, read under the shared lock.
pub fn stat(dir: &storage::Dir, view: &RawView, now: i64) -> Result<Value, Error> {
    let mut live = 0u64;
    let mut live_bytes = 0u64;
    let mut expunged = 0u64;
    let mut expunged_bytes = 0u64;
    let mut bad = 0u64;
    let mut oldest: Option<i64> = None;
    let mut newest: Option<i64> = None;
    let mut flag_counts: BTreeMap<&str, u64> = BTreeMap::new();
    let mut records = 0u64;
    view.for_each_record(|raw| {
        records += 1;
        match &raw.record {
            Ok(r) if r.is_expunged() => {
                expunged += 1;
                expunged_bytes += r.size;
            }
            Ok(r) => {
                live += 1;
                live_bytes += r.size;
                oldest = Some(oldest.map_or(r.internal_date, |o: i64| o.min(r.internal_date)));
                newest = Some(newest.map_or(r.internal_date, |o: i64| o.max(r.internal_date)));
                for n in r.flags.names() {
                    *flag_counts.entry(n).or_default() += 1;
                }
            }
            Err(_) => bad += 1,
        }
    })?;
    let mut files = 0u64;
    let mut file_bytes = 0u64;
    for (name, _) in dir.entries()? {
        if parse_message_file_name(&name).is_some() {
            files += 1;
            let p = dir.child_path(storage::internals::fsutil::os(&name));
            if let Ok(md) = std::fs::symlink_metadata(&p) {
                file_bytes += md.len();
            }
        }
    }
    let staged = match dir.open_dir(storage::internals::fsutil::os(STAGE_DIR.as_bytes())) {
        Ok(st) => st.entries()?.len() as u64,
        Err(_) => 0,
    };
    let h = view.current.as_ref().ok().map(|hr| &hr.header);
    Ok(json!({
        "index": view.index_path,
        "index_bytes": view.file_len,
        "records": records,
        "live": live,
        "live_bytes": live_bytes,
        "expunged_not_repacked": expunged,
        "expunged_bytes": expunged_bytes,
        "bad_records": bad,
        "header_exists": h.map(|h| h.exists),
        "header_total_bytes": h.map(|h| h.total_bytes),
        "message_files": files,
        "message_file_bytes": file_bytes,
        "staged_files": staged,
        "keywords": view.meta.as_ref().map(|m| m.keywords.len()).ok(),
        "flag_counts": flag_counts,
        "oldest_internal_date": oldest.map(iso8601),
        "oldest_age_seconds": oldest.map(|o| now - o),
        "newest_internal_date": newest.map(iso8601),
    }))
}

pub fn stat_human(v: &Value) -> String {
    let mut out = String::new();
    for (k, val) in v.as_object().into_iter().flatten() {
        out.push_str(&format!("{k:<22} {}\n", s(val)));
    }
    out
}

pub fn report_json(path: &Path, rep: &Report) -> Value {
    let f = |sev: Severity| -> Vec<Value> {
        rep.findings
            .iter()
            .filter(|x| x.severity == sev)
            .map(|x| {
                json!({
                    "path": x.path, "offset": x.offset, "message": x.message,
                })
            })
            .collect()
    };
    json!({
        "mailbox": path,
        "clean": rep.is_clean(),
        "unusable": rep.unusable,
        "records_checked": rep.records_checked,
        "files_checked": rep.files_checked,
        "problems": f(Severity::Problem),
        "warnings": f(Severity::Warning),
        "quarantine": rep.quarantine.iter().map(|q| json!({
            "name": q.name, "size": q.size, "since": q.since,
            "reason": q.reason, "original": q.original,
        })).collect::<Vec<_>>(),
    })
}

pub fn report_human(path: &Path, rep: &Report) -> String {
    let mut out = String::new();
    for x in &rep.findings {
        let sev = match x.severity {
            Severity::Problem => "PROBLEM",
            Severity::Warning => "warning",
        };
        let off = x.offset.map_or("-".to_string(), |o| o.to_string());
        out.push_str(&format!(
            "{sev} {} @{off}: {}\n",
            x.path.display(),
            x.message
        ));
    }
    if !rep.quarantine.is_empty() {
        let bytes: u64 = rep.quarantine.iter().map(|q| q.size).sum();
        out.push_str(&format!(
            "quarantine {}: {} file(s), {bytes} bytes that no commit accounts for, kept rather than deleted (idx-admin quarantine list)\n",
            path.join(storage::quarantine::QUARANTINE_DIR).display(),
            rep.quarantine.len(),
        ));
    }
    let problems = rep.problems().count();
    let warnings = rep.warnings().count();
    out.push_str(&format!(
        "{}: {} records, {} message files checked: {}\n",
        path.display(),
        rep.records_checked,
        rep.files_checked,
        if problems == 0 {
            format!("clean ({warnings} warnings)")
        } else {
            format!("{problems} problems, {warnings} warnings")
        }
    ));
    out
}

/// Reads only the header, under a shared lock (for `watch`): one open,
/// one lock, one read, whatever the size of the mailbox. A superseded
/// file means a repack replaced it; the caller polls again and opens the
/// new one.
pub fn read_header(dir: &storage::Dir, timeout: Duration) -> Result<Header, Error> {
    let idx = storage::internals::index::IndexFile::open_read_only(dir)?;
    let _g = storage::internals::lock::LockGuard::acquire(
        idx.file.clone(),
        storage::internals::lock::LockKind::Shared,
        timeout,
        &idx.path,
    )?;
    idx.read_header()
}
