//! The fare table: base fare, rider-category percentages, the card transfer rule and the
//! interop rules for cards issued by other cities (互联互通), loaded from TOML
//! (`fixtures/fares.toml` is the default policy; docs/fares.md gives every field) and checked
//! once at start-up so that computing a fare on the tap path is a few integer operations and
//! lookups in short bounded lists, with no allocation.
//!
//! A card's rider category is its issuer's coding (file 0x16's card type), so the local
//! concessions hold only for cards the fare table's home city issued (file 0x17's issuing
//! city, [`crate::card::tunion`]). A card issued elsewhere pays `interop.fare_percent` of the
//! base fare (100 unless the table says otherwise) whatever its card type, unless its city is
//! in `interop.concession_cities`; a city in `interop.deny_cities`, a city outside a non-empty
//! `interop.allow_cities`, or a card of another city that is not a T-Union interop card is not
//! accepted at all. A table without `[interop]` keeps the old meaning for every Dezhou card.

use serde::{Deserialize, Serialize};

use crate::card::tunion::{CityCode, INTEROP_KIND_TUNION};
use crate::types::{Fen, RiderCategory};

/// The default policy, embedded so that the demo and replay need no set-up.
pub const DEFAULT_FARES_TOML: &str = include_str!("../../fixtures/fares.toml");
/// A base fare above this is refused as a configuration error (100 yuan).
pub const BASE_FARE_FEN_MAX: Fen = 10_000;
/// Longest transfer window accepted (one day).
pub const TRANSFER_WINDOW_S_MAX: u32 = 86_400;
/// Longest city list (allow, deny, concession) a table may hold; a lookup scans at most this.
pub const CITY_LIST_ENTRIES_MAX: usize = 512;
/// Home city when the table names none: Dezhou, as its cards write it in file 0x17.
pub const DEFAULT_HOME_CITY: CityCode = CityCode(4530);

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

/// Rules for cards by issuing city (the `[interop]` section; every field optional).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Interop {
    /// The city whose cards get the local concessions.
    pub home_city: CityCode,
    /// What a card of another city pays, as a percentage of the base fare (100: the adult fare).
    pub fare_percent: u8,
    /// Cities whose cards get the local category percentages, as home cards do.
    pub concession_cities: Vec<CityCode>,
    /// When not empty, only cards of the home city and of these cities are accepted.
    pub allow_cities: Vec<CityCode>,
    /// Cards of these cities are refused (`issuer_not_accepted`).
    pub deny_cities: Vec<CityCode>,
}

impl Default for Interop {
    fn default() -> Self {
        Interop {
            home_city: DEFAULT_HOME_CITY,
            fare_percent: 100,
            concession_cities: Vec::new(),
            allow_cities: Vec::new(),
            deny_cities: Vec::new(),
        }
    }
}

/// How the table treats a card, by its issuing city (file 0x17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Issuer {
    /// Issued by the home city, or by a city granted the local concessions.
    Concessions,
    /// Issued elsewhere: pays `interop.fare_percent`.
    Interop,
}

/// A validated fare table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FareTable {
    pub base_fare_fen: Fen,
    pub category_percent: CategoryPercent,
    pub transfer: Transfer,
    #[serde(default)]
    pub interop: Interop,
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
        let i = &self.interop;
        if i.fare_percent > 100 {
            return Err(FareError::Invalid("interop.fare_percent above 100"));
        }
        if [&i.concession_cities, &i.allow_cities, &i.deny_cities]
            .iter()
            .any(|l| l.len() > CITY_LIST_ENTRIES_MAX)
        {
            return Err(FareError::Invalid(
                "an interop city list longer than CITY_LIST_ENTRIES_MAX",
            ));
        }
        if i.deny_cities.contains(&i.home_city) {
            return Err(FareError::Invalid(
                "interop.deny_cities holds the home city",
            ));
        }
        Ok(())
    }

    /// How a card issued by `city` with interop kind `interop_kind` (file 0x17) rides; `None`
    /// when it is not accepted: a denied city, a city outside a non-empty allow list, or a card
    /// of another city that is not a T-Union interop card.
    pub fn issuer(&self, city: CityCode, interop_kind: u16) -> Option<Issuer> {
        let i = &self.interop;
        if city == i.home_city {
            return Some(Issuer::Concessions);
        }
        let refused = interop_kind != INTEROP_KIND_TUNION
            || i.deny_cities.contains(&city)
            || (!i.allow_cities.is_empty() && !i.allow_cities.contains(&city));
        if refused {
            None
        } else if i.concession_cities.contains(&city) {
            Some(Issuer::Concessions)
        } else {
            Some(Issuer::Interop)
        }
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

    /// Fare of a card boarding before any transfer: the category fare for a card with the
    /// local concessions, `interop.fare_percent` of the base fare for any other.
    pub fn issuer_fare(&self, c: RiderCategory, issuer: Issuer) -> Fen {
        match issuer {
            Issuer::Concessions => self.category_fare(c),
            // base ≤ 10_000 and percent ≤ 100, as in `category_fare`.
            Issuer::Interop => self.base_fare_fen * Fen::from(self.interop.fare_percent) / 100,
        }
    }

    /// Fare of a card boarding: the issuer's fare ([`Self::issuer_fare`]), less the transfer
    /// discount when it applies.
    pub fn card_fare(
        &self,
        c: RiderCategory,
        issuer: Issuer,
        route: u16,
        now_unix_s: i64,
        prev: Option<PreviousBoarding>,
    ) -> Fen {
        let fare = self.issuer_fare(c, issuer);
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
            t.card_fare(
                RiderCategory::Adult,
                Issuer::Concessions,
                1,
                1_000 + 3600,
                prev
            ),
            100
        );
        assert_eq!(
            t.card_fare(
                RiderCategory::Adult,
                Issuer::Concessions,
                1,
                1_000 + 3660,
                prev
            ),
            200
        );
        assert_eq!(
            t.card_fare(
                RiderCategory::Adult,
                Issuer::Concessions,
                2,
                1_000 + 60,
                prev
            ),
            200,
            "same route is no transfer"
        );
        assert_eq!(
            t.card_fare(RiderCategory::Student, Issuer::Concessions, 1, 1_060, prev),
            0
        );
        assert_eq!(
            t.card_fare(RiderCategory::Senior, Issuer::Concessions, 1, 1_060, prev),
            0
        );
    }

    #[test]
    fn a_table_without_interop_gives_home_cards_their_concessions_and_others_the_adult_fare() {
        let t = FareTable::default_policy();
        assert_eq!(t.interop, Interop::default());
        assert_eq!(
            t.issuer(DEFAULT_HOME_CITY, INTEROP_KIND_TUNION),
            Some(Issuer::Concessions)
        );
        // A home card keeps its concession whatever its interop kind.
        assert_eq!(t.issuer(DEFAULT_HOME_CITY, 0), Some(Issuer::Concessions));
        let other = CityCode(1000);
        assert_eq!(t.issuer(other, INTEROP_KIND_TUNION), Some(Issuer::Interop));
        assert_eq!(t.issuer(other, 0), None, "a city-only card of another city");
        for c in RiderCategory::ALL {
            assert_eq!(t.issuer_fare(c, Issuer::Interop), 200, "{c:?}");
        }
    }

    #[test]
    fn interop_allow_deny_and_concession_lists_decide_by_city_code() {
        let text = format!(
            "{DEFAULT_FARES_TOML}\n[interop]\nfare_percent = 90\nconcession_cities = [\"0531\"]\n\
             allow_cities = [\"0531\", \"1000\"]\ndeny_cities = [\"2000\"]\n"
        );
        let t = FareTable::from_toml(&text).unwrap();
        let k = INTEROP_KIND_TUNION;
        assert_eq!(t.issuer(CityCode(531), k), Some(Issuer::Concessions));
        assert_eq!(t.issuer(CityCode(1000), k), Some(Issuer::Interop));
        assert_eq!(t.issuer(CityCode(2000), k), None, "denied");
        assert_eq!(t.issuer(CityCode(3000), k), None, "outside the allow list");
        assert_eq!(t.issuer_fare(RiderCategory::Student, Issuer::Interop), 180);
        assert_eq!(
            t.card_fare(RiderCategory::Student, Issuer::Concessions, 1, 0, None),
            100
        );
    }

    #[test]
    fn bad_interop_sections_are_refused() {
        for extra in [
            "[interop]\nfare_percent = 101\n",
            "[interop]\ndeny_cities = [\"4530\"]\n",
            "[interop]\nallow_cities = [\"453\"]\n",
            "[interop]\nhome_city = 4530\n",
            "[interop]\nunknown = 1\n",
        ] {
            let text = format!("{DEFAULT_FARES_TOML}\n{extra}");
            assert!(FareTable::from_toml(&text).is_err(), "{extra}");
        }
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
