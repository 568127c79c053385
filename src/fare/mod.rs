//! The fare table: base fare, rider-category percentages and the card transfer rule, loaded
//! from TOML (`fixtures/fares.toml` is the default policy) and checked once at start-up so
//! that computing a fare on the tap path is a few integer operations.

use serde::{Deserialize, Serialize};

use crate::types::{Fen, RiderCategory};

/// The default policy, embedded so that the demo and replay need no set-up.
pub const DEFAULT_FARES_TOML: &str = include_str!("../../fixtures/fares.toml");
/// A base fare above this is refused as a configuration error (100 yuan).
pub const BASE_FARE_FEN_MAX: Fen = 10_000;
/// Longest transfer window accepted (one day).
pub const TRANSFER_WINDOW_S_MAX: u32 = 86_400;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryPercent {
    pub adult: u8,
    pub student: u8,
    pub senior: u8,
    pub disabled: u8,
    pub veteran: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    pub window_s: u32,
    pub discount_fen: Fen,
}

/// A validated fare table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FareTable {
    pub base_fare_fen: Fen,
    pub category_percent: CategoryPercent,
    pub transfer: Transfer,
}

#[derive(Debug, thiserror::Error)]
pub enum FareError {
    #[error("fare table: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("fare table: {0}")]
    Invalid(&'static str),
}

/// The earlier boarding a transfer is measured from (as written on the card).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreviousBoarding {
    pub route: u16,
    pub at_unix_s: i64,
}

impl FareTable {
    pub fn default_policy() -> Self {
        // The embedded table is part of the build; tests check it parses.
        Self::from_toml(DEFAULT_FARES_TOML).expect("embedded fixtures/fares.toml is valid")
    }

    pub fn from_toml(text: &str) -> Result<Self, FareError> {
        let t: FareTable = toml::from_str(text)?;
        t.validate()?;
        Ok(t)
    }

    fn validate(&self) -> Result<(), FareError> {
        if self.base_fare_fen > BASE_FARE_FEN_MAX {
            return Err(FareError::Invalid("base_fare_fen above BASE_FARE_FEN_MAX"));
        }
        if RiderCategory::ALL.iter().any(|c| self.percent(*c) > 100) {
            return Err(FareError::Invalid("a category percentage above 100"));
        }
        if self.transfer.window_s > TRANSFER_WINDOW_S_MAX {
            return Err(FareError::Invalid("transfer window above one day"));
        }
        Ok(())
    }

    pub fn percent(&self, c: RiderCategory) -> u8 {
        let p = &self.category_percent;
        match c {
            RiderCategory::Adult => p.adult,
            RiderCategory::Student => p.student,
            RiderCategory::Senior => p.senior,
            RiderCategory::Disabled => p.disabled,
            RiderCategory::Veteran => p.veteran,
        }
    }

    /// Fare of a boarding without transfer (ride codes, and cards with no recent boarding).
    pub fn category_fare(&self, c: RiderCategory) -> Fen {
        // base ≤ 10_000 and percent ≤ 100: the product fits u32 and the division rounds down.
        self.base_fare_fen * Fen::from(self.percent(c)) / 100
    }

    /// Whether a boarding now on `route` is a transfer from `prev`.
    pub fn is_transfer(&self, route: u16, now_unix_s: i64, prev: Option<PreviousBoarding>) -> bool {
        match prev {
            Some(p) => {
                let elapsed = now_unix_s - p.at_unix_s;
                p.route != route && (0..=i64::from(self.transfer.window_s)).contains(&elapsed)
            }
            None => false,
        }
    }

    /// Fare of a card boarding: category fare, less the transfer discount when it applies.
    pub fn card_fare(
        &self,
        c: RiderCategory,
        route: u16,
        now_unix_s: i64,
        prev: Option<PreviousBoarding>,
    ) -> Fen {
        let fare = self.category_fare(c);
        if self.is_transfer(route, now_unix_s, prev) {
            fare.saturating_sub(self.transfer.discount_fen)
        } else {
            fare
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_matches_replay_contract() {
        let t = FareTable::default_policy();
        assert_eq!(t.category_fare(RiderCategory::Adult), 200);
        assert_eq!(t.category_fare(RiderCategory::Student), 100);
        for c in [
            RiderCategory::Senior,
            RiderCategory::Disabled,
            RiderCategory::Veteran,
        ] {
            assert_eq!(t.category_fare(c), 0);
        }
    }

    #[test]
    fn transfer_applies_at_60_minutes_not_61_and_never_below_zero() {
        let t = FareTable::default_policy();
        let prev = Some(PreviousBoarding {
            route: 2,
            at_unix_s: 1_000,
        });
        assert_eq!(
            t.card_fare(RiderCategory::Adult, 1, 1_000 + 3600, prev),
            100
        );
        assert_eq!(
            t.card_fare(RiderCategory::Adult, 1, 1_000 + 3660, prev),
            200
        );
        assert_eq!(
            t.card_fare(RiderCategory::Adult, 2, 1_000 + 60, prev),
            200,
            "same route is no transfer"
        );
        assert_eq!(t.card_fare(RiderCategory::Student, 1, 1_060, prev), 0);
        assert_eq!(t.card_fare(RiderCategory::Senior, 1, 1_060, prev), 0);
    }

    #[test]
    fn bad_tables_are_refused() {
        let bad = DEFAULT_FARES_TOML.replace("student = 50", "student = 150");
        assert!(matches!(
            FareTable::from_toml(&bad),
            Err(FareError::Invalid(_))
        ));
        assert!(matches!(
            FareTable::from_toml("base_fare_fen = -1"),
            Err(FareError::Toml(_))
        ));
    }
}
