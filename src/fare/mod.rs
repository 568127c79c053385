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
//!
//! A concession holds only while the card says it does ([`concession_status`]: its own end
//! date and its annual review date, 年审, from file 0x17); past either the card pays the
//! adult fare and the decision carries a [`FareNote`] saying why. Several riders on one card
//! (连刷, `[[several_riders]]`, off unless the table lists a card type) turn a second tap of
//! the same card shortly after its first into another rider's boarding ([`SeveralRiders`]).

pub mod gtfs;

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
/// Most timeframe rules a table may hold; a fare looks at most at this many.
pub const TIMEFRAME_RULES_MAX: usize = 64;
/// Most routes a table may give their own base fare; a fare looks at most at this many.
pub const ROUTE_FARES_MAX: usize = 256;
/// Seconds in a day: a timeframe's `end` may be at most this (24:00).
pub const DAY_S: u32 = 86_400;
/// Most networks a table may name; a route's network is looked for in at most this many.
pub const NETWORKS_MAX: usize = 64;
/// Most routes one network may list.
pub const NETWORK_ROUTES_MAX: usize = 256;
/// Longest network id, bytes.
pub const NETWORK_ID_BYTES_MAX: usize = 64;
/// Most transfer rules a table may hold; a boarding looks at most at this many.
pub const TRANSFER_RULES_MAX: usize = 64;
/// Most riders one card may board at once (连刷), the first included.
pub const SEVERAL_RIDERS_MAX: u8 = 9;
/// Longest window after a card's first boarding in which further taps board more riders.
pub const SEVERAL_RIDERS_WINDOW_S_MAX: u32 = 600;

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

/// A route with its own base fare (the `[[routes]]` array): air-conditioned or express lines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFare {
    pub route: u16,
    /// Replaces `base_fare_fen` on this route; the percentages apply to it.
    pub base_fare_fen: Fen,
}

/// A network of routes (the `[[networks]]` array, GTFS-Fares v2 `networks.txt` and
/// `route_networks.txt`): air-conditioned lines, express lines. A route is in one network at
/// most; transfer rules name networks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// 1 to [`NETWORK_ID_BYTES_MAX`] bytes, each network once.
    pub network: String,
    /// The base fare of a boarding on the network's routes (a route's own `[[routes]]` entry
    /// comes first); absent: the table's `base_fare_fen`.
    #[serde(default)]
    pub base_fare_fen: Option<Fen>,
    /// The routes of the network, at most [`NETWORK_ROUTES_MAX`].
    pub routes: Vec<u16>,
}

/// A transfer rule (the `[[transfer_rules]]` array, GTFS-Fares v2 `fare_transfer_rules.txt`
/// with networks as the leg groups and the duration measured from one boarding to the next,
/// `duration_limit_type` 1). A card boarding is a transfer by the first rule that holds: the
/// previous boarding written on the card was on another route, at most `duration_s` earlier,
/// on `from_network` (any when absent) and this one is on `to_network` (any when absent), and
/// fewer than `transfer_count` transfers (unlimited when absent) came before it in a row.
/// Exactly one of the three prices is given; a transfer never costs more than the boarding
/// would without it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRule {
    #[serde(default)]
    pub from_network: Option<String>,
    #[serde(default)]
    pub to_network: Option<String>,
    /// Seconds from the previous boarding, 0 to [`TRANSFER_WINDOW_S_MAX`] (inclusive).
    pub duration_s: u32,
    /// Transfers in a row the rule allows, 1 or more; absent: unlimited (GTFS −1).
    #[serde(default)]
    pub transfer_count: Option<u8>,
    /// The boarding's fare less this, never below 0 (GTFS `fare_transfer_type` 1, A + AB + B,
    /// with a negative AB).
    #[serde(default)]
    pub discount_fen: Option<Fen>,
    /// The transfer costs this (GTFS `fare_transfer_type` 0, A + AB).
    #[serde(default)]
    pub fare_fen: Option<Fen>,
    /// Both boardings together cost this: the transfer pays it less what the previous
    /// boarding paid, never below 0 (GTFS `fare_transfer_type` 2, AB).
    #[serde(default)]
    pub journey_fare_fen: Option<Fen>,
}

impl TransferRule {
    /// What the transfer costs, from `leg_fen` (this boarding's fare without the transfer)
    /// and `prev_fen` (what the previous boarding paid).
    pub fn fare(&self, leg_fen: Fen, prev_fen: Fen) -> Fen {
        let priced = match (self.discount_fen, self.fare_fen, self.journey_fare_fen) {
            (Some(d), _, _) => leg_fen.saturating_sub(d),
            (None, Some(f), _) => f,
            (None, None, Some(j)) => j.saturating_sub(prev_fen),
            // Refused when the table is loaded: no rule without a price.
            (None, None, None) => leg_fen,
        };
        priced.min(leg_fen)
    }
}

/// A time of day as TOML gives it, `"HH:MM"` (00:00 to 24:00), held as seconds since midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay(pub u32);

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bad = || serde::de::Error::custom(format!("a time of day is \"HH:MM\", not {s:?}"));
        let b = s.as_bytes();
        if b.len() != 5
            || b[2] != b':'
            || !s[..2]
                .bytes()
                .chain(s[3..].bytes())
                .all(|c| c.is_ascii_digit())
        {
            return Err(bad());
        }
        let (h, m): (u32, u32) = (
            s[..2].parse().map_err(|_| bad())?,
            s[3..].parse().map_err(|_| bad())?,
        );
        if m > 59 || h > 24 || (h == 24 && m != 0) {
            return Err(bad());
        }
        Ok(TimeOfDay(h * 3600 + m * 60))
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!(
            "{:02}:{:02}",
            self.0 / 3600,
            self.0 % 3600 / 60
        ))
    }
}

/// A rule that holds only at some times of day on some days of the week (the
/// `[[timeframes]]` array): while it holds, `category` pays `percent` of the base fare instead
/// of its `category_percent`. The first rule that holds wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeframe {
    pub category: RiderCategory,
    pub percent: u8,
    /// From this local time of the tap (inclusive).
    pub start: TimeOfDay,
    /// To this local time (exclusive); after `start`.
    pub end: TimeOfDay,
    /// ISO weekdays it holds on, 1 Monday .. 7 Sunday; absent: every day.
    #[serde(default = "every_day")]
    pub days: Vec<u8>,
}

fn every_day() -> Vec<u8> {
    (1..=7).collect()
}

impl Timeframe {
    /// Whether the rule holds at local second of day `second` on ISO weekday `weekday`.
    pub fn holds(&self, weekday: u8, second: u32) -> bool {
        self.days.contains(&weekday) && self.start.0 <= second && second < self.end.0
    }
}

/// Several riders on one card (连刷, the `[[several_riders]]` array, one entry per card type
/// at most): a tap of a card of `category` less than `window_s` after the first boarding of
/// its group, while the group holds fewer than `riders_max` riders, boards another rider at
/// the card's fare instead of being a `repeat_tap`. Card types not listed keep anti-passback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeveralRiders {
    pub category: RiderCategory,
    /// Seconds from the group's first boarding, 1 to [`SEVERAL_RIDERS_WINDOW_S_MAX`].
    pub window_s: u32,
    /// Riders of one group, the first included: 2 to [`SEVERAL_RIDERS_MAX`].
    pub riders_max: u8,
}

/// Why a card's fare is not the plain one of its card type, for the display and the decision
/// line (`fare_note`, docs/replay.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FareNote {
    /// The concession's end date (file 0x17) has passed: the adult fare.
    ConcessionEnded,
    /// The annual review (年审) date (file 0x17) has passed: the adult fare until reviewed.
    AnnualReviewDue,
    /// Another rider on the same card (连刷): the rider's number in its group, 2 or more.
    ExtraRider(u8),
}

impl FareNote {
    pub fn as_str(self) -> &'static str {
        match self {
            FareNote::ConcessionEnded => "concession_ended",
            FareNote::AnnualReviewDue => "annual_review_due",
            FareNote::ExtraRider(_) => "extra_rider",
        }
    }

    /// The display's text for an accepted tap with this note: (Chinese, English).
    pub fn text(self) -> (&'static str, &'static str) {
        match self {
            FareNote::ConcessionEnded => ("优惠已到期 按全价", "concession ended, full fare"),
            FareNote::AnnualReviewDue => ("请年审 按全价", "annual review due, full fare"),
            FareNote::ExtraRider(_) => ("同行乘客 请上车", "another rider, please board"),
        }
    }

    /// The rider's number for [`FareNote::ExtraRider`].
    pub fn rider(self) -> Option<u8> {
        match self {
            FareNote::ExtraRider(n) => Some(n),
            _ => None,
        }
    }
}

/// Whether a card's concession still holds on the local date `today` (YYYYMMDD): `None` when
/// it does (both dates inclusive, an absent date never ends it), else the note saying which
/// date has passed, the end date first. An adult card has no concession to lose.
pub fn concession_status(
    category: RiderCategory,
    dates: crate::card::tunion::ConcessionDates,
    today: crate::card::tunion::Ymd,
) -> Option<FareNote> {
    let passed = |d: Option<u32>| d.is_some_and(|d| today > d);
    if category == RiderCategory::Adult {
        None
    } else if passed(dates.concession_until) {
        Some(FareNote::ConcessionEnded)
    } else if passed(dates.review_until) {
        Some(FareNote::AnnualReviewDue)
    } else {
        None
    }
}

/// When a boarding happens, in the local time of the tap, as the fare rules read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalTime {
    /// 1 Monday .. 7 Sunday.
    pub iso_weekday: u8,
    /// Seconds since local midnight.
    pub second_of_day: u32,
}

impl LocalTime {
    pub fn of(t: &crate::clock::Timestamp) -> Self {
        LocalTime {
            iso_weekday: t.local_iso_weekday(),
            second_of_day: t.local_second_of_day(),
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
    /// Rules by time of day and day of week; none by default.
    #[serde(default)]
    pub timeframes: Vec<Timeframe>,
    /// Routes with their own base fare; every other route has `base_fare_fen`.
    #[serde(default)]
    pub routes: Vec<RouteFare>,
    /// Caps for the media charged after the ride, applied at clearing, never on the bus.
    #[serde(default)]
    pub capping: Capping,
    /// Several riders on one card (连刷) by card type; none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub several_riders: Vec<SeveralRiders>,
    /// Networks of routes with their base fare; none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Network>,
    /// Transfer rules by network; when there is any, `[transfer]` is not used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transfer_rules: Vec<TransferRule>,
    /// The lookups a tap makes, built from the fields above when the table is checked
    /// ([`FareTable::checked`], which [`FareTable::from_toml`] runs); never serialized.
    #[serde(skip)]
    index: FareIndex,
}

/// A route in no network, in [`RouteEntry::network`].
const NO_NETWORK: u8 = u8::MAX;
/// A route with no `[[routes]]` entry, in [`RouteEntry::route_fare`].
const NO_ROUTE_FARE: u16 = u16::MAX;
const _: () =
    assert!(NETWORKS_MAX < NO_NETWORK as usize && ROUTE_FARES_MAX < NO_ROUTE_FARE as usize);
// A transfer rule is one bit of a network pair's mask.
const _: () = assert!(TRANSFER_RULES_MAX <= u64::BITS as usize);

/// What a tap looks up in a fare table, indexed once when the table is loaded so that a tap
/// compares no string, scans no list of routes and allocates nothing: a route's network and
/// `[[routes]]` entry by route number (a binary search, at most 15 steps), and the transfer
/// rules that may hold between two networks as one bit mask.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct FareIndex {
    /// Every route the table names (in a network or in `[[routes]]`), once, by route number:
    /// at most [`NETWORKS_MAX`] × [`NETWORK_ROUTES_MAX`] + [`ROUTE_FARES_MAX`] entries.
    routes: Box<[RouteEntry]>,
    /// The transfer rules a tap applies, in the table's order: `[[transfer_rules]]`, or the
    /// old `[transfer]` read as one rule (any networks, `duration_s` its `window_s`, no
    /// count, its `discount_fen`) when there are none. Never empty once built.
    transfer_rules: Vec<TransferRule>,
    /// Per (from, to) pair of network positions (a network's index, or the number of networks
    /// for a route in none), at `from * (networks + 1) + to`: bit `i` set when rule `i`'s
    /// `from_network` and `to_network` allow the pair.
    transfer_rules_by_pair: Box<[u64]>,
}

/// One route of [`FareIndex::routes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RouteEntry {
    route: u16,
    /// Its network's index in `networks`, or [`NO_NETWORK`].
    network: u8,
    /// Its entry's index in `routes`, or [`NO_ROUTE_FARE`].
    route_fare: u16,
}

impl FareIndex {
    /// The index of a table whose fields are valid (each route in one network at most, and
    /// once in `[[routes]]`).
    fn of(t: &FareTable) -> FareIndex {
        let entry = |route| RouteEntry {
            route,
            network: NO_NETWORK,
            route_fare: NO_ROUTE_FARE,
        };
        let mut routes: Vec<RouteEntry> = t
            .networks
            .iter()
            .flat_map(|n| n.routes.iter().copied())
            .chain(t.routes.iter().map(|r| r.route))
            .map(entry)
            .collect();
        routes.sort_unstable_by_key(|e| e.route);
        routes.dedup_by_key(|e| e.route);
        // Every route named is in `routes`, put there just above: each search finds it.
        let find = |routes: &[RouteEntry], route: u16| {
            routes.binary_search_by_key(&route, |e| e.route).ok()
        };
        // The `take`s bound an unchecked table's as a checked one's are bounded: the index is
        // total on any table (`FareTable::indexed`), never a truncated cast or a shift past 63.
        for (i, n) in t.networks.iter().enumerate().take(NETWORKS_MAX) {
            for &r in &n.routes {
                if let Some(k) = find(&routes, r) {
                    // i < NETWORKS_MAX < NO_NETWORK.
                    routes[k].network = i as u8;
                }
            }
        }
        for (i, r) in t.routes.iter().enumerate().take(ROUTE_FARES_MAX) {
            if let Some(k) = find(&routes, r.route) {
                // i < ROUTE_FARES_MAX < NO_ROUTE_FARE.
                routes[k].route_fare = i as u16;
            }
        }
        let transfer_rules = match t.transfer_rules.is_empty() {
            false => t.transfer_rules.clone(),
            true => vec![TransferRule {
                from_network: None,
                to_network: None,
                duration_s: t.transfer.window_s,
                transfer_count: None,
                discount_fen: Some(t.transfer.discount_fen),
                fare_fen: None,
                journey_fare_fen: None,
            }],
        };
        let positions = t.networks.len() + 1;
        let position_of = |id: &Option<String>| {
            id.as_ref()
                .map(|id| t.networks.iter().position(|n| &n.network == id))
        };
        let mut transfer_rules_by_pair = vec![0u64; positions * positions];
        for (i, r) in transfer_rules.iter().enumerate().take(TRANSFER_RULES_MAX) {
            // Networks a rule names are in a checked table; a name no network has allows no
            // pair.
            let (from, to) = (position_of(&r.from_network), position_of(&r.to_network));
            for f in 0..positions {
                for o in 0..positions {
                    let allows = |rule: Option<Option<usize>>, p: usize| match rule {
                        None => true,
                        Some(n) => n == Some(p),
                    };
                    if allows(from, f) && allows(to, o) {
                        transfer_rules_by_pair[f * positions + o] |= 1 << i;
                    }
                }
            }
        }
        FareIndex {
            routes: routes.into(),
            transfer_rules,
            transfer_rules_by_pair: transfer_rules_by_pair.into(),
        }
    }
}

/// A card boarding's fare, the rule that priced it, and the transfers of its journey so far,
/// written on the card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CardFare {
    pub fare_fen: Fen,
    /// Transfers in a row up to this boarding: 0 for a boarding that is no transfer.
    pub transfers: u8,
    /// What priced it ([`FareRule`]; never `SeveralRiders` here: the engine knows the rider).
    pub rule: FareRule,
}

/// A fare and the rule that priced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Priced {
    pub fare_fen: Fen,
    pub rule: FareRule,
}

impl Priced {
    /// `fare_fen` priced by `rule`, or [`FareRule::Free`] when it comes to 0.
    fn of(fare_fen: Fen, rule: FareRule) -> Priced {
        let rule = if fare_fen == 0 { FareRule::Free } else { rule };
        Priced { fare_fen, rule }
    }
}

/// Which rule of the fare table priced a boarding: each accepted record keeps it (flags bits
/// 2–6 of a version 5 record, [`crate::journal::record`]) and the depot reports revenue by
/// it. A boarding is named for the first of these that priced it: another rider on one card,
/// a transfer, a free ride, a timeframe, the interop fare, a category's concession, and then
/// the base fare it started from (a route's, a network's or the table's). A ride code is
/// priced by its certificate's category (interop never applies): `ride_code_category`.
///
/// The numbers are the record's: never reused, never renumbered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum FareRule {
    /// Not said: a record of format version 1 to 4, written before records named their rule
    /// (or made by a tool without one); a depot row stored before it kept them.
    Unknown = 0,
    /// The table's `base_fare_fen` at the adult percentage (`category_percent.adult`).
    BaseFare = 1,
    /// A `[[routes]]` entry's base fare at the adult percentage.
    RouteFare = 2,
    /// A network's base fare (`[[networks]]`) at the adult percentage.
    NetworkFare = 3,
    /// A rider category's own percentage (`category_percent`), local concessions.
    Concession = 4,
    /// A `[[timeframes]]` rule that held at the boarding.
    Timeframe = 5,
    /// A card of another city: `interop.fare_percent`.
    Interop = 6,
    /// A transfer rule (`[[transfer_rules]]`, or the old `[transfer]`).
    Transfer = 7,
    /// Another rider on one card (连刷, `[[several_riders]]`).
    SeveralRiders = 8,
    /// A fare of 0 by the rider's category or timeframe, no transfer (seniors off-peak, say).
    Free = 9,
    /// A ride code, priced by its certificate's rider category (timeframes and the route's
    /// base fare included).
    RideCodeCategory = 10,
}

impl FareRule {
    /// Every rule, by number.
    pub const ALL: [FareRule; 11] = [
        FareRule::Unknown,
        FareRule::BaseFare,
        FareRule::RouteFare,
        FareRule::NetworkFare,
        FareRule::Concession,
        FareRule::Timeframe,
        FareRule::Interop,
        FareRule::Transfer,
        FareRule::SeveralRiders,
        FareRule::Free,
        FareRule::RideCodeCategory,
    ];

    /// The rule of number `n` (a record's flags bits 2–6, a depot row's `rule`), if any.
    pub fn from_u8(n: u8) -> Option<FareRule> {
        FareRule::ALL.get(usize::from(n)).copied()
    }

    /// The name the report, the page and `journal show` use.
    pub fn as_str(self) -> &'static str {
        match self {
            FareRule::Unknown => "unknown",
            FareRule::BaseFare => "base_fare",
            FareRule::RouteFare => "route_fare",
            FareRule::NetworkFare => "network_fare",
            FareRule::Concession => "concession",
            FareRule::Timeframe => "timeframe",
            FareRule::Interop => "interop",
            FareRule::Transfer => "transfer",
            FareRule::SeveralRiders => "several_riders",
            FareRule::Free => "free",
            FareRule::RideCodeCategory => "ride_code_category",
        }
    }
}

/// Daily and weekly (ISO week, from Monday) caps per ride-code account or QuickPass card,
/// applied by the clearing run in boarding order (docs/clearing.md); none when absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capping {
    pub daily_cap_fen: Option<Fen>,
    pub weekly_cap_fen: Option<Fen>,
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
    /// What it paid.
    pub fare_fen: Fen,
    /// Transfers in a row up to it (0: it was no transfer).
    pub transfers: u8,
}

impl FareTable {
    pub fn default_policy() -> Self {
        // The embedded table is part of the build; tests check it parses.
        Self::from_toml(DEFAULT_FARES_TOML).expect("embedded fixtures/fares.toml is valid")
    }

    pub fn from_toml(text: &str) -> Result<Self, FareError> {
        let t: FareTable = toml::from_str(text)?;
        t.checked()
    }

    /// This table checked and indexed for the tap, as [`FareTable::from_toml`] gives it: a
    /// table changed field by field after loading (an import, a test) goes through this again
    /// before it prices a boarding.
    pub fn checked(self) -> Result<Self, FareError> {
        self.validate()?;
        Ok(self.indexed())
    }

    /// This table with its tap lookups rebuilt from its fields as they are now: the engine
    /// indexes every table it is given ([`crate::engine::Core::new`], `set_fares`), so a
    /// table edited field by field after [`FareTable::checked`] never prices a tap by a stale
    /// index. Total on any table (a name no network has allows no pair); off the tap path.
    pub fn indexed(mut self) -> Self {
        self.index = FareIndex::of(&self);
        self
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
        self.validate_timeframes()?;
        self.validate_several_riders()?;
        self.validate_networks()?;
        self.validate_transfer_rules()?;
        self.validate_routes()
    }

    fn validate_networks(&self) -> Result<(), FareError> {
        if self.networks.len() > NETWORKS_MAX {
            return Err(FareError::Invalid("more networks than NETWORKS_MAX"));
        }
        // Every route of the networks before, one bit per route number: each route is
        // looked at once, not against every route listed before it.
        let mut seen = [0u64; (u16::MAX as usize + 1) / 64];
        for (i, n) in self.networks.iter().enumerate() {
            if n.network.is_empty() || n.network.len() > NETWORK_ID_BYTES_MAX {
                return Err(FareError::Invalid(
                    "a network id is 1 to NETWORK_ID_BYTES_MAX bytes",
                ));
            }
            if n.base_fare_fen.is_some_and(|f| f > BASE_FARE_FEN_MAX) {
                return Err(FareError::Invalid(
                    "a network's base_fare_fen above BASE_FARE_FEN_MAX",
                ));
            }
            if n.routes.len() > NETWORK_ROUTES_MAX {
                return Err(FareError::Invalid(
                    "a network with more routes than NETWORK_ROUTES_MAX",
                ));
            }
            let before = &self.networks[..i];
            if before.iter().any(|o| o.network == n.network) {
                return Err(FareError::Invalid("a network listed twice"));
            }
            for &r in &n.routes {
                let (word, bit) = (usize::from(r) / 64, 1u64 << (r % 64));
                if seen[word] & bit != 0 {
                    return Err(FareError::Invalid("a route in more than one network"));
                }
                seen[word] |= bit;
            }
        }
        Ok(())
    }

    fn validate_transfer_rules(&self) -> Result<(), FareError> {
        if self.transfer_rules.len() > TRANSFER_RULES_MAX {
            return Err(FareError::Invalid(
                "more transfer rules than TRANSFER_RULES_MAX",
            ));
        }
        let known = |n: &Option<String>| {
            n.as_ref()
                .map_or(true, |n| self.networks.iter().any(|o| &o.network == n))
        };
        for r in &self.transfer_rules {
            if !known(&r.from_network) || !known(&r.to_network) {
                return Err(FareError::Invalid(
                    "a transfer rule names a network the table does not list",
                ));
            }
            if r.duration_s > TRANSFER_WINDOW_S_MAX {
                return Err(FareError::Invalid(
                    "a transfer rule's duration_s above one day",
                ));
            }
            if r.transfer_count == Some(0) {
                return Err(FareError::Invalid(
                    "a transfer rule's transfer_count is 1 or more",
                ));
            }
            let prices = [r.discount_fen, r.fare_fen, r.journey_fare_fen];
            if prices.iter().flatten().count() != 1 {
                return Err(FareError::Invalid(
                    "a transfer rule gives exactly one of discount_fen, fare_fen, journey_fare_fen",
                ));
            }
            if prices.iter().flatten().any(|f| *f > BASE_FARE_FEN_MAX) {
                return Err(FareError::Invalid(
                    "a transfer rule's amount above BASE_FARE_FEN_MAX",
                ));
            }
        }
        Ok(())
    }

    /// The network `route` is in, if any.
    pub fn network_of(&self, route: u16) -> Option<&Network> {
        self.networks.get(self.network_position(route))
    }

    /// `route`'s network's index in `networks`, or `networks.len()` for a route in none.
    fn network_position(&self, route: u16) -> usize {
        match self.route_entry(route) {
            Some(e) if e.network != NO_NETWORK => usize::from(e.network),
            _ => self.networks.len(),
        }
    }

    /// What the index holds of `route`: `None` for a route the table does not name.
    fn route_entry(&self, route: u16) -> Option<&RouteEntry> {
        debug_assert!(
            !self.index.transfer_rules.is_empty(),
            "a fare table used before FareTable::checked"
        );
        let routes = &self.index.routes;
        routes
            .binary_search_by_key(&route, |e| e.route)
            .ok()
            .map(|k| &routes[k])
    }

    /// Every route with a base fare of its own (a `[[routes]]` entry or a network's), each
    /// once or more.
    pub fn priced_routes(&self) -> impl Iterator<Item = u16> + '_ {
        self.routes.iter().map(|r| r.route).chain(
            self.networks
                .iter()
                .filter(|n| n.base_fare_fen.is_some())
                .flat_map(|n| n.routes.iter().copied()),
        )
    }

    fn validate_routes(&self) -> Result<(), FareError> {
        if self.routes.len() > ROUTE_FARES_MAX {
            return Err(FareError::Invalid("more routes than ROUTE_FARES_MAX"));
        }
        for (i, r) in self.routes.iter().enumerate() {
            if r.base_fare_fen > BASE_FARE_FEN_MAX {
                return Err(FareError::Invalid(
                    "a route's base_fare_fen above BASE_FARE_FEN_MAX",
                ));
            }
            if self.routes[..i].iter().any(|o| o.route == r.route) {
                return Err(FareError::Invalid("a route listed twice in routes"));
            }
        }
        Ok(())
    }

    fn validate_several_riders(&self) -> Result<(), FareError> {
        for (i, r) in self.several_riders.iter().enumerate() {
            if !(1..=SEVERAL_RIDERS_WINDOW_S_MAX).contains(&r.window_s) {
                return Err(FareError::Invalid(
                    "several_riders window_s is 1 to SEVERAL_RIDERS_WINDOW_S_MAX",
                ));
            }
            if !(2..=SEVERAL_RIDERS_MAX).contains(&r.riders_max) {
                return Err(FareError::Invalid(
                    "several_riders riders_max is 2 to SEVERAL_RIDERS_MAX",
                ));
            }
            if self.several_riders[..i]
                .iter()
                .any(|o| o.category == r.category)
            {
                return Err(FareError::Invalid(
                    "a card type listed twice in several_riders",
                ));
            }
        }
        Ok(())
    }

    /// The several-riders rule of card type `c`, if the table has one.
    pub fn several_riders_of(&self, c: RiderCategory) -> Option<&SeveralRiders> {
        self.several_riders.iter().find(|r| r.category == c)
    }

    /// The base fare of a boarding on `route`: its `[[routes]]` entry, else its network's
    /// base fare, else `base_fare_fen`.
    pub fn base_fare_on(&self, route: u16) -> Fen {
        self.base_on(route).0
    }

    /// [`Self::base_fare_on`] and the rule it comes from.
    fn base_on(&self, route: u16) -> (Fen, FareRule) {
        match self.route_entry(route) {
            Some(e) if e.route_fare != NO_ROUTE_FARE => (
                self.routes[usize::from(e.route_fare)].base_fare_fen,
                FareRule::RouteFare,
            ),
            _ => match self.network_of(route).and_then(|n| n.base_fare_fen) {
                Some(fen) => (fen, FareRule::NetworkFare),
                None => (self.base_fare_fen, FareRule::BaseFare),
            },
        }
    }

    fn validate_timeframes(&self) -> Result<(), FareError> {
        if self.timeframes.len() > TIMEFRAME_RULES_MAX {
            return Err(FareError::Invalid(
                "more timeframes than TIMEFRAME_RULES_MAX",
            ));
        }
        for tf in &self.timeframes {
            if tf.percent > 100 {
                return Err(FareError::Invalid("a timeframe percent above 100"));
            }
            if tf.start >= tf.end || tf.end.0 > DAY_S {
                return Err(FareError::Invalid(
                    "a timeframe whose start is not before its end",
                ));
            }
            if tf.days.is_empty() || tf.days.iter().any(|d| !(1..=7).contains(d)) {
                return Err(FareError::Invalid("timeframe days are ISO weekdays 1 to 7"));
            }
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

    /// Fare of a boarding without transfer (ride codes, and cards with no recent boarding),
    /// by `category_percent` alone.
    pub fn category_fare(&self, c: RiderCategory) -> Fen {
        // base ≤ 10_000 and percent ≤ 100: the product fits u32 and the division rounds down.
        self.base_fare_fen * Fen::from(self.percent(c)) / 100
    }

    /// The first timeframe for category `c` that holds at `at`, if any.
    fn timeframe_at(&self, c: RiderCategory, at: LocalTime) -> Option<&Timeframe> {
        self.timeframes
            .iter()
            .find(|tf| tf.category == c && tf.holds(at.iso_weekday, at.second_of_day))
    }

    /// The percentage category `c` pays at `at`: the first timeframe that holds, else
    /// `category_percent`.
    pub fn percent_at(&self, c: RiderCategory, at: LocalTime) -> u8 {
        self.timeframe_at(c, at)
            .map_or(self.percent(c), |tf| tf.percent)
    }

    /// [`Self::category_fare`] on `route`'s base fare with the timeframes applied (ride codes,
    /// and the card fare).
    pub fn category_fare_at(&self, c: RiderCategory, route: u16, at: LocalTime) -> Fen {
        self.category_priced_at(c, route, at).fare_fen
    }

    /// [`Self::category_fare_at`] and the rule that priced it: a timeframe, the category's
    /// concession, or for an adult the base fare's own rule; `free` when it comes to 0.
    pub fn category_priced_at(&self, c: RiderCategory, route: u16, at: LocalTime) -> Priced {
        let (base, base_rule) = self.base_on(route);
        let (percent, rule) = match self.timeframe_at(c, at) {
            Some(tf) => (tf.percent, FareRule::Timeframe),
            None if c == RiderCategory::Adult => (self.percent(c), base_rule),
            None => (self.percent(c), FareRule::Concession),
        };
        // base ≤ 10_000 and percent ≤ 100, as in `category_fare`.
        Priced::of(base * Fen::from(percent) / 100, rule)
    }

    /// Fare of a card boarding before any transfer: the category fare for a card with the
    /// local concessions, `interop.fare_percent` of the base fare for any other.
    pub fn issuer_fare(&self, c: RiderCategory, issuer: Issuer, route: u16, at: LocalTime) -> Fen {
        self.issuer_priced(c, issuer, route, at).fare_fen
    }

    /// [`Self::issuer_fare`] and the rule that priced it.
    pub fn issuer_priced(
        &self,
        c: RiderCategory,
        issuer: Issuer,
        route: u16,
        at: LocalTime,
    ) -> Priced {
        match issuer {
            Issuer::Concessions => self.category_priced_at(c, route, at),
            // base ≤ 10_000 and percent ≤ 100, as in `category_fare`.
            Issuer::Interop => Priced::of(
                self.base_fare_on(route) * Fen::from(self.interop.fare_percent) / 100,
                FareRule::Interop,
            ),
        }
    }

    /// The transfer rule a boarding on `route` at `now_unix_s` gets after `prev` (the first
    /// of `[[transfer_rules]]` that holds, or the old `[transfer]` read as one rule), if any.
    /// Looks at the rules the two routes' networks allow (one mask, indexed at load), at most
    /// [`TRANSFER_RULES_MAX`]; compares no string.
    pub fn transfer_rule(
        &self,
        route: u16,
        now_unix_s: i64,
        prev: PreviousBoarding,
    ) -> Option<&TransferRule> {
        debug_assert!(
            !self.index.transfer_rules.is_empty(),
            "a fare table used before FareTable::checked"
        );
        if prev.route == route {
            return None;
        }
        let elapsed = now_unix_s - prev.at_unix_s;
        let positions = self.networks.len() + 1;
        let pair = self.network_position(prev.route) * positions + self.network_position(route);
        let mut rules = self
            .index
            .transfer_rules_by_pair
            .get(pair)
            .copied()
            .unwrap_or(0);
        while rules != 0 {
            let i = rules.trailing_zeros() as usize;
            rules &= rules - 1;
            let r = &self.index.transfer_rules[i];
            if (0..=i64::from(r.duration_s)).contains(&elapsed)
                && r.transfer_count.map_or(true, |n| prev.transfers < n)
            {
                return Some(r);
            }
        }
        None
    }

    /// Fare of a card boarding: the issuer's fare ([`Self::issuer_priced`]), then the
    /// transfer when one applies ([`Self::transfer_rule`]: by `[[transfer_rules]]` when the
    /// table has any, else by `[transfer]`, another route within `window_s`, less
    /// `discount_fen`), with the rule that priced it.
    pub fn card_fare(
        &self,
        c: RiderCategory,
        issuer: Issuer,
        route: u16,
        now: &crate::clock::Timestamp,
        prev: Option<PreviousBoarding>,
    ) -> CardFare {
        let priced = self.issuer_priced(c, issuer, route, LocalTime::of(now));
        let plain = CardFare {
            fare_fen: priced.fare_fen,
            transfers: 0,
            rule: priced.rule,
        };
        let Some(p) = prev else {
            return plain;
        };
        match self.transfer_rule(route, now.unix_s, p) {
            Some(rule) => CardFare {
                fare_fen: rule.fare(priced.fare_fen, p.fare_fen),
                transfers: p.transfers.saturating_add(1),
                rule: FareRule::Transfer,
            },
            None => plain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;

    fn at(unix_s: i64) -> Timestamp {
        Timestamp {
            unix_s,
            utc_offset_s: 8 * 3600,
        }
    }

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
            fare_fen: 200,
            transfers: 0,
        });
        assert_eq!(
            t.card_fare(
                RiderCategory::Adult,
                Issuer::Concessions,
                1,
                &at(1_000 + 3600),
                prev
            )
            .fare_fen,
            100
        );
        assert_eq!(
            t.card_fare(
                RiderCategory::Adult,
                Issuer::Concessions,
                1,
                &at(1_000 + 3660),
                prev
            )
            .fare_fen,
            200
        );
        assert_eq!(
            t.card_fare(
                RiderCategory::Adult,
                Issuer::Concessions,
                2,
                &at(1_000 + 60),
                prev
            )
            .fare_fen,
            200,
            "same route is no transfer"
        );
        assert_eq!(
            t.card_fare(
                RiderCategory::Student,
                Issuer::Concessions,
                1,
                &at(1_060),
                prev
            )
            .fare_fen,
            0
        );
        assert_eq!(
            t.card_fare(
                RiderCategory::Senior,
                Issuer::Concessions,
                1,
                &at(1_060),
                prev
            )
            .fare_fen,
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
            assert_eq!(
                t.issuer_fare(c, Issuer::Interop, 1, LocalTime::of(&at(0))),
                200,
                "{c:?}"
            );
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
        assert_eq!(
            t.issuer_fare(
                RiderCategory::Student,
                Issuer::Interop,
                1,
                LocalTime::of(&at(0))
            ),
            180
        );
        assert_eq!(
            t.card_fare(RiderCategory::Student, Issuer::Concessions, 1, &at(0), None)
                .fare_fen,
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

    /// Seniors ride free off-peak only: 100 % on weekdays 07:00–09:00.
    const SENIORS_PAY_AT_PEAK: &str = "[[timeframes]]\ncategory = \"senior\"\npercent = 100\n\
        start = \"07:00\"\nend = \"09:00\"\ndays = [1, 2, 3, 4, 5]\n";

    fn local(rfc3339: &str) -> LocalTime {
        LocalTime::of(&Timestamp::parse_rfc3339(rfc3339).unwrap())
    }

    #[test]
    fn seniors_ride_free_off_peak_only_at_both_edges_of_the_hours_and_the_week() {
        let t =
            FareTable::from_toml(&format!("{DEFAULT_FARES_TOML}\n{SENIORS_PAY_AT_PEAK}")).unwrap();
        let senior = |at: &str| t.category_fare_at(RiderCategory::Senior, 1, local(at));
        // Friday 2026-11-27.
        assert_eq!(senior("2026-11-27T06:59:59+08:00"), 0);
        assert_eq!(senior("2026-11-27T07:00:00+08:00"), 200);
        assert_eq!(senior("2026-11-27T08:59:59+08:00"), 200);
        assert_eq!(senior("2026-11-27T09:00:00+08:00"), 0);
        // Saturday and Sunday off, Monday 2026-11-30 on; time and weekday are taken in the
        // offset of the tap, as the validity dates are.
        assert_eq!(senior("2026-11-28T07:30:00+08:00"), 0);
        assert_eq!(senior("2026-11-29T07:30:00+08:00"), 0);
        assert_eq!(senior("2026-11-30T07:30:00+08:00"), 200);
        assert_eq!(senior("2026-11-29T23:30:00+00:00"), 0);
        // Other categories are untouched.
        assert_eq!(
            t.category_fare_at(
                RiderCategory::Student,
                1,
                local("2026-11-27T07:30:00+08:00")
            ),
            100
        );
    }

    #[test]
    fn a_commuter_discount_in_the_morning_holds_from_start_to_end_exclusive_and_the_first_rule_wins(
    ) {
        let text = format!(
            "{DEFAULT_FARES_TOML}\n[[timeframes]]\ncategory = \"adult\"\npercent = 80\n\
             start = \"06:30\"\nend = \"08:00\"\n[[timeframes]]\ncategory = \"adult\"\n\
             percent = 50\nstart = \"00:00\"\nend = \"24:00\"\ndays = [7]\n"
        );
        let t = FareTable::from_toml(&text).unwrap();
        let adult = |at: &str| t.category_fare_at(RiderCategory::Adult, 1, local(at));
        assert_eq!(adult("2026-11-27T06:29:59+08:00"), 200);
        assert_eq!(adult("2026-11-27T06:30:00+08:00"), 160);
        assert_eq!(adult("2026-11-27T07:59:59+08:00"), 160);
        assert_eq!(adult("2026-11-27T08:00:00+08:00"), 200);
        // Sunday 2026-11-29: the morning rule comes first; the all-day rule from 00:00 to 24:00.
        assert_eq!(adult("2026-11-29T07:00:00+08:00"), 160);
        assert_eq!(adult("2026-11-29T00:00:00+08:00"), 100);
        assert_eq!(adult("2026-11-29T23:59:59+08:00"), 100);
        assert_eq!(adult("2026-11-28T23:59:59+08:00"), 200);
        assert_eq!(adult("2026-11-30T00:00:00+08:00"), 200);
    }

    #[test]
    fn bad_timeframes_are_refused() {
        for bad in [
            "category = \"senior\"\npercent = 101\nstart = \"07:00\"\nend = \"09:00\"",
            "category = \"senior\"\npercent = 0\nstart = \"09:00\"\nend = \"09:00\"",
            "category = \"senior\"\npercent = 0\nstart = \"07:00\"\nend = \"24:01\"",
            "category = \"senior\"\npercent = 0\nstart = \"7:00\"\nend = \"09:00\"",
            "category = \"senior\"\npercent = 0\nstart = \"07:60\"\nend = \"09:00\"",
            "category = \"senior\"\npercent = 0\nstart = \"07:00\"\nend = \"09:00\"\ndays = [0]",
            "category = \"senior\"\npercent = 0\nstart = \"07:00\"\nend = \"09:00\"\ndays = []",
            "category = \"child\"\npercent = 0\nstart = \"07:00\"\nend = \"09:00\"",
        ] {
            let text = format!("{DEFAULT_FARES_TOML}\n[[timeframes]]\n{bad}\n");
            assert!(FareTable::from_toml(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_route_with_its_own_base_fare_prices_every_category_and_interop_cards_from_it() {
        let text = format!(
            "{DEFAULT_FARES_TOML}\n[interop]\nfare_percent = 90\n\
             [[routes]]\nroute = 5\nbase_fare_fen = 300\n"
        );
        let t = FareTable::from_toml(&text).unwrap();
        let noon = LocalTime::of(&at(4 * 3600));
        for (route, adult, student, interop) in
            [(4, 200, 100, 180), (5, 300, 150, 270), (6, 200, 100, 180)]
        {
            assert_eq!(t.category_fare_at(RiderCategory::Adult, route, noon), adult);
            assert_eq!(
                t.category_fare_at(RiderCategory::Student, route, noon),
                student
            );
            assert_eq!(
                t.issuer_fare(RiderCategory::Student, Issuer::Interop, route, noon),
                interop
            );
        }
        let twice = format!("{text}[[routes]]\nroute = 5\nbase_fare_fen = 100\n");
        assert!(FareTable::from_toml(&twice).is_err());
        let dear = format!("{DEFAULT_FARES_TOML}\n[[routes]]\nroute = 5\nbase_fare_fen = 10001\n");
        assert!(FareTable::from_toml(&dear).is_err());
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

    fn every_rule() -> FareTable {
        FareTable::from_toml(include_str!("../../fixtures/fares-every-rule.toml")).unwrap()
    }

    #[test]
    fn each_card_boarding_is_named_for_the_rule_that_priced_it() {
        let t = every_rule();
        let at = |s: &str| Timestamp::parse_rfc3339(s).unwrap();
        // Friday 2026-11-27: 10:00 is off-peak, 07:30 the seniors' peak.
        let noon = at("2026-11-27T10:00:00+08:00");
        let peak = at("2026-11-27T07:30:00+08:00");
        let fare = |c, issuer, route, now: &Timestamp, prev| {
            let f = t.card_fare(c, issuer, route, now, prev);
            (f.fare_fen, f.rule)
        };
        use FareRule as R;
        use RiderCategory::{Adult, Senior, Student};
        let home = Issuer::Concessions;
        assert_eq!(fare(Adult, home, 4, &noon, None), (200, R::BaseFare));
        assert_eq!(fare(Adult, home, 5, &noon, None), (300, R::RouteFare));
        assert_eq!(fare(Adult, home, 6, &noon, None), (300, R::NetworkFare));
        assert_eq!(
            fare(Adult, home, 1, &noon, None),
            (200, R::BaseFare),
            "no network fare"
        );
        assert_eq!(fare(Student, home, 4, &noon, None), (100, R::Concession));
        assert_eq!(fare(Student, home, 5, &noon, None), (150, R::Concession));
        assert_eq!(fare(Senior, home, 4, &noon, None), (0, R::Free));
        assert_eq!(fare(Senior, home, 4, &peak, None), (200, R::Timeframe));
        assert_eq!(
            fare(Student, Issuer::Interop, 4, &noon, None),
            (180, R::Interop)
        );
        assert_eq!(
            fare(Senior, Issuer::Interop, 6, &peak, None),
            (270, R::Interop)
        );
        let prev = |route, fare_fen, transfers| PreviousBoarding {
            route,
            at_unix_s: noon.unix_s - 600,
            fare_fen,
            transfers,
        };
        // City to city: 100 off; to a free senior, still the transfer that priced it.
        assert_eq!(
            fare(Adult, home, 2, &noon, Some(prev(1, 200, 0))),
            (100, R::Transfer)
        );
        assert_eq!(
            fare(Senior, home, 2, &noon, Some(prev(1, 0, 0))),
            (0, R::Transfer)
        );
        // The third city transfer in a row is none: a new journey at the base fare.
        assert_eq!(
            fare(Adult, home, 2, &noon, Some(prev(1, 100, 2))),
            (200, R::BaseFare)
        );
        // City to express: 400 in all; express to a route in no network: 50.
        assert_eq!(
            fare(Adult, home, 6, &noon, Some(prev(1, 200, 0))),
            (200, R::Transfer)
        );
        assert_eq!(
            fare(Adult, home, 4, &noon, Some(prev(6, 300, 0))),
            (50, R::Transfer)
        );
        // A route in no network to a city line: no rule names it.
        assert_eq!(
            fare(Adult, home, 1, &noon, Some(prev(4, 200, 0))),
            (200, R::BaseFare)
        );
        // A ride code's and QuickPass's fares: the category's, timeframes included.
        assert_eq!(
            t.category_priced_at(Adult, 7, LocalTime::of(&noon)),
            Priced {
                fare_fen: 300,
                rule: R::NetworkFare
            }
        );
        assert_eq!(FareRule::from_u8(10), Some(R::RideCodeCategory));
        assert_eq!(FareRule::from_u8(11), None);
        for (n, rule) in FareRule::ALL.iter().enumerate() {
            assert_eq!(*rule as usize, n, "numbered by position");
        }
    }

    #[test]
    fn the_old_transfer_section_is_read_as_one_rule_between_any_routes() {
        let t = FareTable::default_policy();
        assert!(t.transfer_rules.is_empty(), "the table itself is unchanged");
        let prev = PreviousBoarding {
            route: 2,
            at_unix_s: 1_000,
            fare_fen: 200,
            transfers: 7,
        };
        let rule = t.transfer_rule(1, 1_000 + 3600, prev).unwrap();
        assert_eq!(
            (rule.duration_s, rule.discount_fen, rule.transfer_count),
            (3600, Some(100), None)
        );
        assert!(rule.from_network.is_none() && rule.to_network.is_none());
        assert_eq!(t.transfer_rule(1, 1_000 + 3601, prev), None);
        assert_eq!(t.transfer_rule(2, 1_000 + 60, prev), None, "same route");
        assert_eq!(
            t.transfer_rule(1, 1_000 - 1, prev),
            None,
            "before the last boarding"
        );
        let f = t.card_fare(
            RiderCategory::Adult,
            Issuer::Concessions,
            1,
            &at(1_060),
            Some(prev),
        );
        assert_eq!(
            (f.fare_fen, f.transfers, f.rule),
            (100, 8, FareRule::Transfer)
        );
        // Serialized, it is still the old section.
        let text = toml::to_string(&t).unwrap();
        assert!(text.contains("[transfer]") && !text.contains("transfer_rules"));
        assert_eq!(FareTable::from_toml(&text).unwrap(), t);
    }

    #[test]
    fn transfer_rules_hold_from_the_previous_boarding_s_second_to_the_last_of_their_duration() {
        let t = every_rule();
        let from_city = PreviousBoarding {
            route: 1,
            at_unix_s: 10_000,
            fare_fen: 200,
            transfers: 0,
        };
        let rule_at = |route, s, prev| t.transfer_rule(route, s, prev).map(|r| r.duration_s);
        // City to city, 3600 s: from 0 s to the last second; a boarding the card says came
        // later than this one (a clock set back) is no transfer.
        assert_eq!(rule_at(2, 10_000, from_city), Some(3600));
        assert_eq!(rule_at(2, 10_000 + 3600, from_city), Some(3600));
        assert_eq!(rule_at(2, 10_000 + 3601, from_city), None);
        assert_eq!(rule_at(2, 10_000 - 1, from_city), None);
        // City to express, 5400 s; express to any route, 2700 s: each at its own edge.
        assert_eq!(rule_at(6, 10_000 + 5400, from_city), Some(5400));
        assert_eq!(rule_at(6, 10_000 + 5401, from_city), None);
        let from_express = PreviousBoarding {
            route: 6,
            ..from_city
        };
        assert_eq!(rule_at(4, 10_000 + 2700, from_express), Some(2700));
        assert_eq!(rule_at(4, 10_000 + 2701, from_express), None);
        assert_eq!(
            rule_at(7, 10_000 + 60, from_express),
            Some(2700),
            "express to express"
        );
    }

    #[test]
    fn the_index_finds_every_route_of_every_network_and_route_fare() {
        let t = every_rule();
        for route in 0..=u16::MAX {
            let scanned = t.networks.iter().find(|n| n.routes.contains(&route));
            assert_eq!(t.network_of(route), scanned, "route {route}");
        }
        assert_eq!(t.base_fare_on(5), 300);
        assert_eq!(t.base_fare_on(7), 300);
        assert_eq!(t.base_fare_on(8), 200);
        // A table changed field by field is checked (and indexed) again before it prices.
        let mut changed = t.clone();
        changed.routes.push(RouteFare {
            route: 8,
            base_fare_fen: 250,
        });
        let changed = changed.checked().unwrap();
        assert_eq!(changed.base_fare_on(8), 250);
    }

    #[test]
    fn indexing_is_total_on_a_table_past_every_limit() {
        // Never checked: more networks, route fares and transfer rules than a table may have,
        // and a rule naming a network no one has. Indexing neither panics nor truncates an
        // index into another route's entry.
        let mut t = FareTable::default_policy();
        t.networks = (0..300u16)
            .map(|i| Network {
                network: format!("n{i}"),
                base_fare_fen: Some(300),
                routes: vec![1_000 + i],
            })
            .collect();
        t.routes = (0..70_000u32)
            .map(|i| RouteFare {
                route: (i % 65_536) as u16,
                base_fare_fen: 400,
            })
            .collect();
        t.transfer_rules = (0..100)
            .map(|_| TransferRule {
                from_network: Some("nowhere".into()),
                to_network: None,
                duration_s: 60,
                transfer_count: None,
                discount_fen: Some(1),
                fare_fen: None,
                journey_fare_fen: None,
            })
            .collect();
        let t = t.indexed();
        assert_eq!(t.base_fare_on(2), 400);
        let prev = PreviousBoarding {
            route: 1_000,
            at_unix_s: 0,
            fare_fen: 300,
            transfers: 0,
        };
        assert_eq!(
            t.transfer_rule(1_001, 30, prev),
            None,
            "no network is nowhere"
        );
    }
}
