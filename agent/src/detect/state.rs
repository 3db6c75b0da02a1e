//! State mapping: the value of a `state` point (plus the asset's `operation_mode` point for OPC UA Machinery)
//! becomes a candidate machine state; an asset's candidates combine by strength (down > planned > running >
//! idle > unknown). Pure functions, table-tested.

use super::meaning::{Preset, StateMeaning};
use shiftlens_common::MachineState;

/// PackML state numbers → machine state. Execute is the only producing state; Aborting/Aborted/Clearing
/// (a fault) and Holding/Held/Unholding (an internal machine stop) are down; the rest (Stopped, Idle,
/// Starting, Resetting, Suspended - starved or blocked by a neighbour - and Complete) are idle.
pub fn packml(code: i64) -> MachineState {
    use MachineState::*;
    match code {
        6 => Running,
        1 | 8 | 9 | 10 | 11 | 12 => Down,
        2..=5 | 7 | 13..=17 => Idle,
        _ => Unknown,
    }
}

/// OPC UA Machinery: `MachineryItemState` × `MachineryOperationMode`. Maintenance (1) and setup (2) modes
/// are planned time whatever the item does; otherwise Executing (2) is running, NotExecuting (3) idle,
/// OutOfService (1) down and NotAvailable (0, switched off or energy saving) idle.
pub fn opcua_machinery(item_state: i64, operation_mode: Option<i64>) -> MachineState {
    use MachineState::*;
    if matches!(operation_mode, Some(1 | 2)) {
        return Planned;
    }
    match item_state {
        2 => Running,
        0 | 3 => Idle,
        1 => Down,
        _ => Unknown,
    }
}

/// How strongly a candidate state claims the asset when several points feed it.
pub fn strength(s: MachineState) -> u8 {
    match s {
        MachineState::Down => 4,
        MachineState::Planned => 3,
        MachineState::Running => 2,
        MachineState::Idle => 1,
        MachineState::Unknown => 0,
    }
}

fn lookup(m: &StateMeaning, code: i64) -> Option<MachineState> {
    m.codes.iter().find(|(k, _)| k.parse::<i64>().ok() == Some(code)).map(|(_, s)| *s)
}

/// The candidate state of one `state` point; `None` when the point has no opinion (a clear flag).
pub fn candidate(m: &StateMeaning, value: i64, operation_mode: Option<i64>) -> Option<MachineState> {
    let default = m.default.unwrap_or(MachineState::Unknown);
    match m.preset {
        Preset::Codes => Some(lookup(m, value).unwrap_or(default)),
        Preset::Packml => Some(lookup(m, value).unwrap_or_else(|| match packml(value) {
            MachineState::Unknown => default,
            s => s,
        })),
        Preset::OpcuaMachinery => Some(opcua_machinery(value, operation_mode)),
        Preset::Flag => (value != 0).then_some(m.when_true.unwrap_or(MachineState::Down)),
        Preset::Bits => {
            let set = m
                .codes
                .iter()
                .filter_map(|(k, s)| k.parse::<u32>().ok().filter(|b| *b < 64 && value >> b & 1 == 1).map(|_| *s));
            Some(set.max_by_key(|s| strength(*s)).unwrap_or(m.default.unwrap_or(MachineState::Idle)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MachineState::*;

    fn meaning(preset: Preset, codes: &[(&str, MachineState)]) -> StateMeaning {
        StateMeaning {
            preset,
            codes: codes.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            default: None,
            when_true: None,
            debounce: None,
        }
    }

    #[test]
    fn packml_states_map_to_machine_states() {
        let table = [
            (0, Unknown),
            (1, Down),
            (2, Idle),
            (4, Idle),
            (5, Idle),
            (6, Running),
            (9, Down),
            (11, Down),
            (17, Idle),
            (18, Unknown),
            (-1, Unknown),
        ];
        for (code, want) in table {
            assert_eq!(packml(code), want, "PackML {code}");
        }
        let m = meaning(Preset::Packml, &[("11", Planned)]);
        assert_eq!(candidate(&m, 11, None), Some(Planned), "codes override the preset");
        assert_eq!(candidate(&m, 6, None), Some(Running));
    }

    #[test]
    fn machinery_item_state_combines_with_operation_mode() {
        let table = [
            (2, None, Running),
            (2, Some(3), Running),
            (3, Some(0), Idle),
            (1, Some(3), Down),
            (1, Some(1), Planned),
            (2, Some(2), Planned),
            (0, None, Idle),
            (7, None, Unknown),
        ];
        for (item, mode, want) in table {
            assert_eq!(opcua_machinery(item, mode), want, "item {item} mode {mode:?}");
        }
    }

    #[test]
    fn codes_flags_and_bits_give_candidates() {
        let codes = meaning(Preset::Codes, &[("0", Idle), ("1", Running), ("2", Down)]);
        assert_eq!(candidate(&codes, 2, None), Some(Down));
        assert_eq!(candidate(&codes, 9, None), Some(Unknown));
        let mut flag = meaning(Preset::Flag, &[]);
        flag.when_true = Some(Planned);
        assert_eq!(candidate(&flag, 1, None), Some(Planned));
        assert_eq!(candidate(&flag, 0, None), None);
        let bits = meaning(Preset::Bits, &[("0", Running), ("1", Down), ("2", Planned)]);
        assert_eq!(candidate(&bits, 0b001, None), Some(Running));
        assert_eq!(candidate(&bits, 0b111, None), Some(Down), "the strongest set bit wins");
        assert_eq!(candidate(&bits, 0b101, None), Some(Planned));
        assert_eq!(candidate(&bits, 0, None), Some(Idle));
    }
}
