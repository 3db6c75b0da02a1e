//! Privacy by aggregation: reports about people show only groups of at least `min_group_size` people,
//! and person ids are replaced by stable pseudonyms when `pseudonymize` is on (a keyless FNV-1a hash:
//! stable across runs so a works council can follow a pseudonym, not meant to resist a dictionary of ids).

use crate::people::Personnel;

/// Whether a crew is large enough at t to be reported on.
pub fn group_allowed(p: &Personnel, crew: &str, t: i64) -> bool {
    p.settings.min_group_size <= 1 || p.crew_members(crew, t).len() >= p.settings.min_group_size
}

/// Whether reports may list individual people at all.
pub fn persons_allowed(p: &Personnel) -> bool {
    p.settings.min_group_size <= 1
}

/// The id to show for a person.
pub fn show(p: &Personnel, id: &str) -> String {
    if !p.settings.pseudonymize {
        return id.to_string();
    }
    pseudonym(id)
}

/// The stable pseudonym of a person id (`P-xxxxxx`), the same in reports and escalation messages.
pub fn pseudonym(id: &str) -> String {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("P-{:06x}", h & 0xff_ffff)
}
