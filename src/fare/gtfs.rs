//! GTFS-Fares v2 import (`fare-validator fares import-gtfs DIR`): a feed's fare files read
//! into a [`FareTable`], with a list of what the table cannot express.
//!
//! Files read (GTFS Schedule reference, "Fares"): `networks.txt`, `route_networks.txt`,
//! `rider_categories.txt`, `fare_media.txt`, `fare_products.txt`, `fare_leg_rules.txt`,
//! `fare_transfer_rules.txt`, `timeframes.txt` and `calendar.txt` (the weekdays of the
//! timeframes' services). `fare_products.txt` and `fare_leg_rules.txt` are required, the
//! others optional. Every file is read whole with the `csv` crate, its header naming the
//! columns; a row that is not CSV, has the wrong number of fields, lacks a required value, has
//! a number or time that is not one, or names an id no file defines is a
//! [`GtfsError::Malformed`] with the file and line.
//!
//! How the feed becomes a table, for a validator that sees one boarding at a time:
//!
//! | GTFS | fare table |
//! | --- | --- |
//! | `fare_media.txt` | products of a physical transit card (`fare_media_type` 2) are used, else those with no medium; others are left out |
//! | `rider_categories.txt` | a category whose id or name is a card type (`adult`, `student`, `senior`, `disabled`, `veteran`) prices it; the default category is `adult`; a product with no category prices every card type |
//! | a leg rule with a `network_id` | `[[networks]]`: the network, its routes (`route_networks.txt`, numeric route ids) and its `base_fare_fen`, the adult product's amount; a second product for the network (a pass) is reported |
//! | a leg rule without | `base_fare_fen` |
//! | another category's product for a leg | `category_percent`, when a whole percentage of the adult amount, the same on every leg |
//! | a leg rule with `from_timeframe_group_id` | `[[timeframes]]`, one per period of the group and category: the service's weekdays (`calendar.txt`), the period's start and end, the amount as a percentage of the network's base fare (its rule without timeframe, else its dearest by timeframe); only in a feed that prices one network |
//! | `fare_transfer_rules.txt` | `[[transfer_rules]]`: leg groups as their networks, `duration_limit` in s, `transfer_count` (−1 unlimited), `fare_transfer_type` 0 `fare_fen`, 1 `discount_fen` (a negative amount), 2 `journey_fare_fen`; no `[transfer]` discount beside them |
//!
//! Not expressed, and reported: areas (zone fares: `areas.txt`, `stop_areas.txt`,
//! `area_sets.txt`, the leg rules that name them), `to_timeframe_group_id`, legs joined at
//! stops (`fare_leg_join_rules.txt`), service by date (`calendar_dates.txt`, the dates of
//! `calendar.txt`), `rule_priority`, duration types other than 1 (taken as 1: boarding to
//! boarding), nonconsecutive transfers (a card holds its last boarding only), columns of the
//! rule files not read, amounts that are not whole percentages, a surcharge on a type-1
//! transfer, categories with no card type, route ids that are not numbers, times that are not
//! whole minutes, and the currency (amounts are taken in its minor unit, as fen). A feed of
//! which no leg rule can be expressed makes no table ([`GtfsError::NothingExpressed`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::{
    FareTable, Network, TimeOfDay, Timeframe, Transfer, TransferRule, BASE_FARE_FEN_MAX, DAY_S,
    TIMEFRAME_RULES_MAX, TRANSFER_WINDOW_S_MAX,
};
use crate::types::{Fen, RiderCategory};

/// A feed that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GtfsError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file} line {line}: {what}")]
    Malformed {
        file: String,
        line: u64,
        what: String,
    },
    #[error("the imported table is refused: {0}")]
    Table(String),
    /// No leg rule of the feed can be expressed: no table is made (a table of the default
    /// policy's fares would charge what the feed never said).
    #[error("no fare leg rule of the feed can be expressed on a bus validator")]
    NothingExpressed { not_expressed: Vec<String> },
}

/// A feed read into a table, and what it says that the table cannot.
#[derive(Debug)]
pub struct Import {
    pub table: FareTable,
    /// One line per thing left out or changed, naming the file and line.
    pub not_expressed: Vec<String>,
}

/// One CSV file: (line, column → value) per row.
struct Rows {
    file: String,
    headers: Vec<String>,
    rows: Vec<(u64, HashMap<String, String>)>,
}

impl Rows {
    fn read(dir: &Path, name: &str, required: bool) -> Result<Rows, GtfsError> {
        let path = dir.join(name);
        let file = name.to_string();
        if !path.exists() && !required {
            return Ok(Rows {
                file,
                headers: Vec::new(),
                rows: Vec::new(),
            });
        }
        let mut r = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_path(&path)
            .map_err(|e| csv_err(&file, e))?;
        let headers = r.headers().map_err(|e| csv_err(&file, e))?.clone();
        let mut rows = Vec::new();
        for rec in r.records() {
            let rec = rec.map_err(|e| csv_err(&file, e))?;
            let line = rec.position().map_or(0, |p| p.line());
            let row = headers
                .iter()
                .zip(rec.iter())
                .filter(|(_, v)| !v.is_empty())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect();
            rows.push((line, row));
        }
        Ok(Rows {
            file,
            headers: headers.iter().map(str::to_string).collect(),
            rows,
        })
    }

    /// One note naming the columns of this file that the import does not read.
    fn unread_columns(&self, read: &[&str], notes: &mut Vec<String>) {
        let unread: Vec<&str> = self
            .headers
            .iter()
            .map(String::as_str)
            .filter(|h| !read.contains(h))
            .collect();
        if !unread.is_empty() {
            notes.push(format!(
                "{}: column {} not read: rules taken without it",
                self.file,
                unread.join(", ")
            ));
        }
    }

    fn bad(&self, line: u64, what: impl Into<String>) -> GtfsError {
        GtfsError::Malformed {
            file: self.file.clone(),
            line,
            what: what.into(),
        }
    }

    fn required<'a>(
        &self,
        line: u64,
        row: &'a HashMap<String, String>,
        col: &str,
    ) -> Result<&'a str, GtfsError> {
        row.get(col)
            .map(String::as_str)
            .ok_or_else(|| self.bad(line, format!("{col} is required")))
    }

    fn int(
        &self,
        line: u64,
        row: &HashMap<String, String>,
        col: &str,
    ) -> Result<Option<i64>, GtfsError> {
        row.get(col)
            .map(|v| {
                v.parse()
                    .map_err(|_| self.bad(line, format!("{col} {v:?} is not an integer")))
            })
            .transpose()
    }
}

fn csv_err(file: &str, e: csv::Error) -> GtfsError {
    let line = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(source) => GtfsError::Io {
            file: file.to_string(),
            source,
        },
        kind => GtfsError::Malformed {
            file: file.to_string(),
            line,
            what: format!("{kind:?}"),
        },
    }
}

/// A GTFS amount ("3.20", "-1.5", "2") in its currency's minor unit (two decimals).
fn minor_units(s: &str) -> Option<i64> {
    let (neg, digits) = s.strip_prefix('-').map_or((false, s), |d| (true, d));
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && frac.is_empty()
        || frac.len() > 2
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
        || whole.len() > 12
    {
        return None;
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac: i64 = format!("{frac:0<2}").parse().ok()?;
    let v = whole * 100 + frac;
    Some(if neg { -v } else { v })
}

/// A product's amount for each card type it prices.
type Prices = HashMap<RiderCategory, i64>;

fn category_named(id: &str, name: Option<&String>) -> Option<RiderCategory> {
    RiderCategory::ALL.into_iter().find(|c| {
        id.eq_ignore_ascii_case(c.as_str())
            || name.is_some_and(|n| n.eq_ignore_ascii_case(c.as_str()))
    })
}

/// Files of a feed the import does not read, and why a bus validator cannot use them.
const FILES_NOT_READ: [(&str, &str); 6] = [
    (
        "areas.txt",
        "zones: a bus validator is not told where a rider alights",
    ),
    (
        "stop_areas.txt",
        "zones: a bus validator is not told where a rider alights",
    ),
    (
        "area_sets.txt",
        "zones: a bus validator is not told where a rider alights",
    ),
    (
        "fare_leg_join_rules.txt",
        "legs joined at stops: every boarding is a leg here",
    ),
    (
        "calendar_dates.txt",
        "service by date: the table's timeframes hold by weekday",
    ),
    (
        "fare_attributes.txt",
        "GTFS fares v1: only v2 files are imported",
    ),
];

/// Read the feed in `dir`; fields GTFS does not carry (interop, `[transfer]`, the
/// percentages of card types the feed does not price) are `FareTable::default_policy()`'s.
/// A feed of which no leg rule can be expressed is [`GtfsError::NothingExpressed`]: a table
/// of the default policy's fares would charge what the feed never said.
pub fn import_dir(dir: &Path) -> Result<Import, GtfsError> {
    let mut notes = Vec::new();
    for (file, why) in FILES_NOT_READ {
        if dir.join(file).exists() {
            notes.push(format!("{file}: not read ({why})"));
        }
    }
    let media = read_media(dir)?;
    let categories = read_categories(dir, &mut notes)?;
    let products = read_products(dir, &media, &categories, &mut notes)?;
    let networks = read_networks(dir, &mut notes)?;
    let calendar = read_calendar(dir)?;
    let mut timeframes = read_timeframes(dir, &calendar, &mut notes)?;
    let mut table = FareTable::default_policy();
    // The feed's transfer rules are its only ones: no `[transfer]` discount beside them.
    table.transfer = Transfer {
        window_s: 0,
        discount_fen: 0,
    };
    let feed = Feed {
        products: &products,
        networks: &networks,
        calendar: &calendar,
    };
    let legs = read_leg_rules(dir, &feed, &mut timeframes, &mut table, &mut notes)?;
    if legs.expressed == 0 {
        return Err(GtfsError::NothingExpressed {
            not_expressed: notes,
        });
    }
    read_transfer_rules(dir, &products, &legs.groups, &mut table, &mut notes)?;
    for (group, tf) in &timeframes {
        if !tf.used {
            notes.push(format!(
                "timeframes.txt: timeframe_group_id {group:?} prices no leg rule imported"
            ));
        }
    }
    let text = toml::to_string(&table).map_err(|e| GtfsError::Table(e.to_string()))?;
    let table = FareTable::from_toml(&text).map_err(|e| GtfsError::Table(e.to_string()))?;
    Ok(Import {
        table,
        not_expressed: notes,
    })
}

/// What the leg rules read from the other files.
struct Feed<'a> {
    products: &'a Products,
    networks: &'a BTreeMap<String, Vec<u16>>,
    calendar: &'a HashMap<String, Service>,
}

/// A service of `calendar.txt`: the ISO weekdays it runs and the dates it runs between.
struct Service {
    line: u64,
    days: Vec<u8>,
    start_date: String,
    end_date: String,
}

/// The weekday columns of `calendar.txt`, ISO order (1 Monday .. 7 Sunday).
const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// service_id → its weekdays and dates.
fn read_calendar(dir: &Path) -> Result<HashMap<String, Service>, GtfsError> {
    let f = Rows::read(dir, "calendar.txt", false)?;
    let mut out = HashMap::new();
    for (line, row) in &f.rows {
        let id = f.required(*line, row, "service_id")?;
        let mut days = Vec::new();
        for (iso, col) in (1u8..).zip(WEEKDAYS) {
            match f.int(*line, row, col)? {
                Some(1) => days.push(iso),
                Some(0) => {}
                _ => return Err(f.bad(*line, format!("{col} is 0 or 1"))),
            }
        }
        let service = Service {
            line: *line,
            days,
            start_date: f.required(*line, row, "start_date")?.to_string(),
            end_date: f.required(*line, row, "end_date")?.to_string(),
        };
        out.insert(id.to_string(), service);
    }
    Ok(out)
}

/// One row of `timeframes.txt` as the table can hold it.
struct Period {
    start_s: u32,
    end_s: u32,
    service: String,
}

/// A timeframe group: its periods the table can hold, and whether a leg rule priced by it
/// was imported.
#[derive(Default)]
struct TimeframeGroup {
    periods: Vec<Period>,
    used: bool,
}

/// A GTFS time ("H:MM:SS" or "HH:MM:SS", 00:00:00 to 24:00:00 in a timeframe), seconds
/// since midnight.
fn time_s(s: &str) -> Option<u32> {
    let mut parts = s.split(':');
    let (h, m, sec) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |p: &str, n: std::ops::RangeInclusive<usize>| {
        n.contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
    };
    if parts.next().is_some() || !digits(h, 1..=2) || !digits(m, 2..=2) || !digits(sec, 2..=2) {
        return None;
    }
    let (h, m, sec): (u32, u32, u32) = (h.parse().ok()?, m.parse().ok()?, sec.parse().ok()?);
    let t = h * 3600 + m * 60 + sec;
    (m < 60 && sec < 60 && t <= DAY_S).then_some(t)
}

/// timeframe_group_id → its periods. A period whose service runs on no weekday of
/// `calendar.txt`, or whose times are not whole minutes (the table counts minutes), is
/// reported and left out.
fn read_timeframes(
    dir: &Path,
    calendar: &HashMap<String, Service>,
    notes: &mut Vec<String>,
) -> Result<BTreeMap<String, TimeframeGroup>, GtfsError> {
    let f = Rows::read(dir, "timeframes.txt", false)?;
    let mut out: BTreeMap<String, TimeframeGroup> = BTreeMap::new();
    for (line, row) in &f.rows {
        let group = f.required(*line, row, "timeframe_group_id")?;
        let service = f.required(*line, row, "service_id")?;
        let time = |col: &str| -> Result<Option<u32>, GtfsError> {
            row.get(col)
                .map(|v| time_s(v).ok_or_else(|| f.bad(*line, format!("{col} {v:?} is no time"))))
                .transpose()
        };
        let (start_s, end_s) = match (time("start_time")?, time("end_time")?) {
            (None, None) => (0, DAY_S),
            (Some(s), Some(e)) if s < e => (s, e),
            (Some(_), Some(_)) => return Err(f.bad(*line, "start_time is not before end_time")),
            _ => return Err(f.bad(*line, "start_time and end_time go together")),
        };
        let entry = out.entry(group.to_string()).or_default();
        let why = match calendar.get(service) {
            None => Some(format!("service_id {service:?} is in no calendar.txt")),
            Some(c) if c.days.is_empty() => {
                Some(format!("service_id {service:?} runs on no weekday"))
            }
            Some(_) if start_s % 60 != 0 || end_s % 60 != 0 => {
                Some("a time that is not a whole minute".to_string())
            }
            Some(_) => None,
        };
        match why {
            Some(why) => notes.push(format!("timeframes.txt line {line}: {why}: left out")),
            None => entry.periods.push(Period {
                start_s,
                end_s,
                service: service.to_string(),
            }),
        }
    }
    Ok(out)
}

/// fare_media_id → fare_media_type.
fn read_media(dir: &Path) -> Result<HashMap<String, i64>, GtfsError> {
    let f = Rows::read(dir, "fare_media.txt", false)?;
    let mut media = HashMap::new();
    for (line, row) in &f.rows {
        let id = f.required(*line, row, "fare_media_id")?;
        let kind = f
            .int(*line, row, "fare_media_type")?
            .ok_or_else(|| f.bad(*line, "fare_media_type is required"))?;
        media.insert(id.to_string(), kind);
    }
    Ok(media)
}

/// rider_category_id → card type, for those that are one.
fn read_categories(
    dir: &Path,
    notes: &mut Vec<String>,
) -> Result<HashMap<String, RiderCategory>, GtfsError> {
    let f = Rows::read(dir, "rider_categories.txt", false)?;
    let mut out = HashMap::new();
    for (line, row) in &f.rows {
        let id = f.required(*line, row, "rider_category_id")?;
        let default = f.int(*line, row, "is_default_fare_category")? == Some(1);
        let c = if default {
            Some(RiderCategory::Adult)
        } else {
            category_named(id, row.get("rider_category_name"))
        };
        match c {
            Some(c) => {
                out.insert(id.to_string(), c);
            }
            None => notes.push(format!(
                "rider_categories.txt line {line}: {id:?} is no card type here: its products are left out"
            )),
        }
    }
    Ok(out)
}

/// Transit card media (type 2) first, then products with no medium.
const MEDIA_CARD: i64 = 2;

/// The products: amount per card type on the medium the card is, and every product id.
struct Products {
    card: HashMap<String, Prices>,
    all: std::collections::HashSet<String>,
}

/// fare_product_id → amount per card type, on the medium the card is.
fn read_products(
    dir: &Path,
    media: &HashMap<String, i64>,
    categories: &HashMap<String, RiderCategory>,
    notes: &mut Vec<String>,
) -> Result<Products, GtfsError> {
    let f = Rows::read(dir, "fare_products.txt", true)?;
    // (product, category) → (medium rank: 0 card, 1 none; amount)
    let mut best: HashMap<(String, RiderCategory), (u8, i64)> = HashMap::new();
    let mut skipped_media = 0;
    let mut all = std::collections::HashSet::new();
    for (line, row) in &f.rows {
        let id = f.required(*line, row, "fare_product_id")?;
        all.insert(id.to_string());
        let amount = f.required(*line, row, "amount")?;
        let amount =
            minor_units(amount).ok_or_else(|| f.bad(*line, format!("amount {amount:?}")))?;
        f.required(*line, row, "currency")?;
        let rank = match row.get("fare_media_id") {
            None => 1,
            Some(m) => match media.get(m) {
                None => {
                    return Err(f.bad(
                        *line,
                        format!("fare_media_id {m:?} is not in fare_media.txt"),
                    ))
                }
                Some(&MEDIA_CARD) => 0,
                Some(_) => {
                    skipped_media += 1;
                    continue;
                }
            },
        };
        let cats: Vec<RiderCategory> = match row.get("rider_category_id") {
            None => RiderCategory::ALL.to_vec(),
            Some(c) => categories.get(c).copied().into_iter().collect(),
        };
        for c in cats {
            let e = best.entry((id.to_string(), c)).or_insert((rank, amount));
            if rank < e.0 {
                *e = (rank, amount);
            }
        }
    }
    if skipped_media > 0 {
        notes.push(format!(
            "fare_products.txt: {skipped_media} products for media other than a transit card \
             (cash, paper, contactless bank cards, apps): left out"
        ));
    }
    if let Some(c) = f.rows.first().and_then(|(_, r)| r.get("currency")) {
        notes.push(format!(
            "fare_products.txt: amounts in {c} taken in its minor unit as fen"
        ));
    }
    let mut card: HashMap<String, Prices> = HashMap::new();
    for ((id, c), (_, amount)) in best {
        card.entry(id).or_default().insert(c, amount);
    }
    Ok(Products { card, all })
}

/// network_id → routes.
fn read_networks(
    dir: &Path,
    notes: &mut Vec<String>,
) -> Result<BTreeMap<String, Vec<u16>>, GtfsError> {
    let n = Rows::read(dir, "networks.txt", false)?;
    let mut out: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for (line, row) in &n.rows {
        out.insert(
            n.required(*line, row, "network_id")?.to_string(),
            Vec::new(),
        );
    }
    let r = Rows::read(dir, "route_networks.txt", false)?;
    for (line, row) in &r.rows {
        let network = r.required(*line, row, "network_id")?;
        let route = r.required(*line, row, "route_id")?;
        let Some(routes) = out.get_mut(network) else {
            return Err(r.bad(
                *line,
                format!("network_id {network:?} is not in networks.txt"),
            ));
        };
        match route.parse::<u16>() {
            Ok(v) => routes.push(v),
            Err(_) => notes.push(format!(
                "route_networks.txt line {line}: route {route:?} is not a route number (0–65535): left out"
            )),
        }
    }
    Ok(out)
}

/// leg_group_id → its network (`None`: any); `Err(())` for a group whose rules were left out.
type LegGroups = HashMap<String, Result<Option<String>, ()>>;

/// The leg rules read: their groups for the transfer rules, and how many priced the table.
struct Legs {
    groups: LegGroups,
    expressed: usize,
}

/// A leg rule the table can carry: its network (`None`: every route), its timeframe group
/// (`None`: outside the network's timeframes) and its product's prices.
struct Leg {
    line: u64,
    network: Option<String>,
    timeframe: Option<String>,
    prices: Prices,
}

/// The columns of `fare_leg_rules.txt` the import reads.
const LEG_RULE_COLUMNS: [&str; 10] = [
    "leg_group_id",
    "network_id",
    "fare_product_id",
    "from_timeframe_group_id",
    "rule_priority",
    "from_area_id",
    "to_area_id",
    "to_timeframe_group_id",
    "contains_exactly_area_set_id",
    "contains_area_set_id",
];

/// Columns of `fare_leg_rules.txt` that make a rule one a bus validator cannot apply: it is
/// not told where a rider alights, nor when.
const LEG_RULE_COLUMNS_NOT_EXPRESSED: [&str; 5] = [
    "from_area_id",
    "to_area_id",
    "to_timeframe_group_id",
    "contains_exactly_area_set_id",
    "contains_area_set_id",
];

fn read_leg_rules(
    dir: &Path,
    feed: &Feed<'_>,
    timeframes: &mut BTreeMap<String, TimeframeGroup>,
    table: &mut FareTable,
    notes: &mut Vec<String>,
) -> Result<Legs, GtfsError> {
    let f = Rows::read(dir, "fare_leg_rules.txt", true)?;
    f.unread_columns(&LEG_RULE_COLUMNS, notes);
    let mut groups: LegGroups = HashMap::new();
    let mut kept = Vec::new();
    for (line, row) in &f.rows {
        let product = f.required(*line, row, "fare_product_id")?;
        if !feed.products.all.contains(product) {
            return Err(f.bad(
                *line,
                format!("fare_product_id {product:?} is not in fare_products.txt"),
            ));
        }
        let network = row.get("network_id").cloned();
        if let Some(n) = &network {
            if !feed.networks.contains_key(n) {
                return Err(f.bad(*line, format!("network_id {n:?} is not in networks.txt")));
            }
        }
        let timeframe = row.get("from_timeframe_group_id").cloned();
        if let Some(t) = &timeframe {
            if !timeframes.contains_key(t) {
                return Err(f.bad(
                    *line,
                    format!("from_timeframe_group_id {t:?} is not in timeframes.txt"),
                ));
            }
        }
        let group = row.get("leg_group_id").cloned();
        let unsupported: Vec<&str> = LEG_RULE_COLUMNS_NOT_EXPRESSED
            .into_iter()
            .filter(|c| row.contains_key(*c))
            .collect();
        let prices = feed.products.card.get(product);
        let left_out = if !unsupported.is_empty() {
            Some(format!(
                "{} not expressible on a bus validator",
                unsupported.join(", ")
            ))
        } else if prices.is_none() {
            Some(format!("{product:?} has no price for a transit card"))
        } else if !prices.is_some_and(|p| p.contains_key(&RiderCategory::Adult)) {
            Some("no adult (default category) price".to_string())
        } else if timeframe
            .as_ref()
            .is_some_and(|t| timeframes[t].periods.is_empty())
        {
            Some("its timeframe group has no period the table can hold".to_string())
        } else {
            None
        };
        if let Some(why) = left_out {
            notes.push(format!(
                "fare_leg_rules.txt line {line}: {why}: rule left out"
            ));
            if let Some(g) = group {
                groups.entry(g).or_insert(Err(()));
            }
            continue;
        }
        if let Some(g) = group {
            groups.insert(g, Ok(network.clone()));
        }
        if row.contains_key("rule_priority") {
            notes.push(format!(
                "fare_leg_rules.txt line {line}: rule_priority ignored"
            ));
        }
        kept.push(Leg {
            line: *line,
            network,
            timeframe,
            prices: prices.cloned().unwrap_or_default(),
        });
    }
    let mut expressed = 0;
    let mut percents: HashMap<RiderCategory, u8> = HashMap::new();
    for leg in kept.iter().filter(|l| l.timeframe.is_none()) {
        expressed += usize::from(price_leg(&f, leg, feed, table, &mut percents, notes)?);
    }
    for (c, p) in percents {
        *category_percent_mut(table, c) = p;
    }
    expressed += price_timed_legs(&f, &kept, feed, timeframes, table, notes)?;
    Ok(Legs { groups, expressed })
}

fn category_percent_mut(table: &mut FareTable, c: RiderCategory) -> &mut u8 {
    let cp = &mut table.category_percent;
    match c {
        RiderCategory::Adult => &mut cp.adult,
        RiderCategory::Student => &mut cp.student,
        RiderCategory::Senior => &mut cp.senior,
        RiderCategory::Disabled => &mut cp.disabled,
        RiderCategory::Veteran => &mut cp.veteran,
    }
}

/// An adult amount as a base fare, or the malformed-feed error.
fn base_fen(f: &Rows, line: u64, adult: i64) -> Result<Fen, GtfsError> {
    Fen::try_from(adult)
        .ok()
        .filter(|f| *f <= BASE_FARE_FEN_MAX)
        .ok_or_else(|| {
            f.bad(
                line,
                format!("product amount {adult} outside 0..=10000 fen"),
            )
        })
}

/// `amount` as a whole percentage of `base`, when it is one of 0 to 100.
fn whole_percent(amount: i64, base: i64) -> Option<u8> {
    (base > 0 && (0..=base).contains(&amount) && (amount * 100) % base == 0)
        .then(|| (amount * 100 / base) as u8)
}

/// A leg rule outside timeframes: its network's base fare (or the table's) and the other
/// categories' percentages of it. Whether the rule priced the table.
fn price_leg(
    f: &Rows,
    leg: &Leg,
    feed: &Feed<'_>,
    table: &mut FareTable,
    percents: &mut HashMap<RiderCategory, u8>,
    notes: &mut Vec<String>,
) -> Result<bool, GtfsError> {
    let line = leg.line;
    let adult = leg.prices[&RiderCategory::Adult];
    let base = base_fen(f, line, adult)?;
    match &leg.network {
        None => table.base_fare_fen = base,
        Some(n) if table.networks.iter().any(|o| &o.network == n) => {
            notes.push(format!(
                "fare_leg_rules.txt line {line}: a second product for network {n:?} (a pass, say): the first one's fare kept"
            ));
            return Ok(false);
        }
        Some(n) => table.networks.push(Network {
            network: n.clone(),
            base_fare_fen: Some(base),
            routes: feed.networks[n].clone(),
        }),
    }
    let mut others: Vec<(RiderCategory, i64)> = leg
        .prices
        .iter()
        .filter(|(c, _)| **c != RiderCategory::Adult)
        .map(|(c, a)| (*c, *a))
        .collect();
    others.sort_by_key(|(c, _)| *c as u8);
    for (c, amount) in others {
        match whole_percent(amount, adult) {
            Some(p) if percents.get(&c).map_or(true, |q| *q == p) => {
                percents.insert(c, p);
            }
            _ => notes.push(format!(
                "fare_leg_rules.txt line {line}: {} pays {amount} of {adult}: not one whole percentage on every leg; category_percent.{} left at {}",
                c.as_str(), c.as_str(), table.percent(c)
            )),
        }
    }
    Ok(true)
}

/// Leg rules by timeframe (`from_timeframe_group_id`: the boarding's time) as
/// `[[timeframes]]`: each period of the group, on its service's weekdays, prices each
/// category at its amount as a percentage of the network's base fare (the fare of its rule
/// without timeframe, else the dearest adult amount by timeframe). The table's timeframes
/// hold on every route, so they are imported only from a feed that prices one network.
/// How many rules priced the table.
fn price_timed_legs(
    f: &Rows,
    kept: &[Leg],
    feed: &Feed<'_>,
    timeframes: &mut BTreeMap<String, TimeframeGroup>,
    table: &mut FareTable,
    notes: &mut Vec<String>,
) -> Result<usize, GtfsError> {
    let timed: Vec<&Leg> = kept.iter().filter(|l| l.timeframe.is_some()).collect();
    let Some(first) = timed.first() else {
        return Ok(0);
    };
    let network = &first.network;
    if kept.iter().any(|l| &l.network != network) {
        for leg in &timed {
            notes.push(format!(
                "fare_leg_rules.txt line {}: a fare by timeframe in a feed of several networks (the table's timeframes hold on every route): rule left out",
                leg.line
            ));
        }
        return Ok(0);
    }
    let untimed = kept.iter().find(|l| l.timeframe.is_none());
    let base = match untimed {
        Some(l) => l.prices[&RiderCategory::Adult],
        None => {
            let dearest = timed
                .iter()
                .map(|l| l.prices[&RiderCategory::Adult])
                .max()
                .unwrap_or(0);
            let fen = base_fen(f, first.line, dearest)?;
            match network {
                None => table.base_fare_fen = fen,
                Some(n) => table.networks.push(Network {
                    network: n.clone(),
                    base_fare_fen: Some(fen),
                    routes: feed.networks[n].clone(),
                }),
            }
            dearest
        }
    };
    let mut expressed = 0;
    let mut dates_said = std::collections::HashSet::new();
    for leg in timed {
        let group = leg.timeframe.as_deref().unwrap_or_default();
        let tf = timeframes
            .get_mut(group)
            .expect("checked when the rule was read");
        tf.used = true;
        let mut prices: Vec<(RiderCategory, i64)> =
            leg.prices.iter().map(|(c, a)| (*c, *a)).collect();
        prices.sort_by_key(|(c, _)| *c as u8);
        let mut priced = false;
        for (c, amount) in prices {
            let Some(percent) = whole_percent(amount, base) else {
                notes.push(format!(
                    "fare_leg_rules.txt line {}: {} pays {amount} in {group:?}: not a whole percentage of the base fare {base}, at most 100: left out",
                    leg.line,
                    c.as_str()
                ));
                continue;
            };
            for p in &tf.periods {
                if table.timeframes.len() == TIMEFRAME_RULES_MAX {
                    notes.push(format!(
                        "fare_leg_rules.txt line {}: more than TIMEFRAME_RULES_MAX ({TIMEFRAME_RULES_MAX}) timeframes: the rest left out",
                        leg.line
                    ));
                    return Ok(expressed + usize::from(priced));
                }
                let service = &feed.calendar[&p.service];
                if dates_said.insert(p.service.clone()) {
                    notes.push(format!(
                        "calendar.txt line {}: service {:?} runs from {} to {}: its timeframes hold on every date",
                        service.line, p.service, service.start_date, service.end_date
                    ));
                }
                table.timeframes.push(Timeframe {
                    category: c,
                    percent,
                    start: TimeOfDay(p.start_s),
                    end: TimeOfDay(p.end_s),
                    days: service.days.clone(),
                });
                priced = true;
            }
        }
        expressed += usize::from(priced);
    }
    Ok(expressed)
}

/// The columns of `fare_transfer_rules.txt` the import reads.
const TRANSFER_RULE_COLUMNS: [&str; 8] = [
    "from_leg_group_id",
    "to_leg_group_id",
    "transfer_count",
    "duration_limit",
    "duration_limit_type",
    "fare_transfer_type",
    "fare_product_id",
    "nonconsecutive_transfers_allowed",
];

fn read_transfer_rules(
    dir: &Path,
    products: &Products,
    legs: &LegGroups,
    table: &mut FareTable,
    notes: &mut Vec<String>,
) -> Result<(), GtfsError> {
    let f = Rows::read(dir, "fare_transfer_rules.txt", false)?;
    f.unread_columns(&TRANSFER_RULE_COLUMNS, notes);
    for (line, row) in &f.rows {
        if f.int(*line, row, "nonconsecutive_transfers_allowed")? == Some(1) {
            notes.push(format!(
                "fare_transfer_rules.txt line {line}: nonconsecutive_transfers_allowed: a card \
                 holds its last boarding only, so the rule prices a transfer from the boarding \
                 just before"
            ));
        }
        let group = |col: &str| -> Result<Result<Option<String>, ()>, GtfsError> {
            match row.get(col) {
                None => Ok(Ok(None)),
                Some(g) => legs.get(g).cloned().ok_or_else(|| {
                    f.bad(
                        *line,
                        format!("{col} {g:?} is no leg group of fare_leg_rules.txt"),
                    )
                }),
            }
        };
        let (Ok(from_network), Ok(to_network)) =
            (group("from_leg_group_id")?, group("to_leg_group_id")?)
        else {
            notes.push(format!(
                "fare_transfer_rules.txt line {line}: a leg group whose rules were left out: rule left out"
            ));
            continue;
        };
        let kind = f
            .int(*line, row, "fare_transfer_type")?
            .ok_or_else(|| f.bad(*line, "fare_transfer_type is required"))?;
        let amount = match row.get("fare_product_id") {
            None => 0,
            Some(p) => products
                .card
                .get(p)
                .and_then(|prices| prices.get(&RiderCategory::Adult).copied())
                .ok_or_else(|| {
                    f.bad(
                        *line,
                        format!("fare_product_id {p:?} has no adult price for a transit card"),
                    )
                })?,
        };
        let duration_s = match f.int(*line, row, "duration_limit")? {
            None => {
                notes.push(format!(
                    "fare_transfer_rules.txt line {line}: no duration_limit: one day"
                ));
                TRANSFER_WINDOW_S_MAX
            }
            Some(d) => u32::try_from(d)
                .ok()
                .filter(|d| *d <= TRANSFER_WINDOW_S_MAX)
                .ok_or_else(|| f.bad(*line, format!("duration_limit {d} outside 0..=86400")))?,
        };
        if row.contains_key("duration_limit")
            && f.int(*line, row, "duration_limit_type")? != Some(1)
        {
            notes.push(format!("fare_transfer_rules.txt line {line}: duration_limit_type taken as 1 (boarding to boarding)"));
        }
        let transfer_count = match f.int(*line, row, "transfer_count")? {
            None | Some(-1) => None,
            Some(n) if (1..=255).contains(&n) => Some(n as u8),
            Some(n) => return Err(f.bad(*line, format!("transfer_count {n}"))),
        };
        let fen = |v: i64| Fen::try_from(v).ok().filter(|v| *v <= BASE_FARE_FEN_MAX);
        let mut rule = TransferRule {
            from_network,
            to_network,
            duration_s,
            transfer_count,
            discount_fen: None,
            fare_fen: None,
            journey_fare_fen: None,
        };
        let priced = match kind {
            0 => fen(amount).map(|a| rule.fare_fen = Some(a)),
            1 => fen(-amount).map(|a| rule.discount_fen = Some(a)),
            2 => fen(amount).map(|a| rule.journey_fare_fen = Some(a)),
            k => return Err(f.bad(*line, format!("fare_transfer_type {k}"))),
        };
        if priced.is_none() {
            notes.push(format!(
                "fare_transfer_rules.txt line {line}: a transfer amount of {amount} is not expressible (type {kind}): rule left out"
            ));
            continue;
        }
        table.transfer_rules.push(rule);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_read_in_minor_units_strictly() {
        for (s, v) in [
            ("3.20", Some(320)),
            ("2", Some(200)),
            ("-1.5", Some(-150)),
            (".5", Some(50)),
        ] {
            assert_eq!(minor_units(s), v, "{s}");
        }
        for s in ["", "-", "1.234", "1,45", "abc", "1e3"] {
            assert_eq!(minor_units(s), None, "{s}");
        }
    }

    #[test]
    fn timeframe_times_are_read_to_24_00_00_with_one_or_two_hour_digits() {
        for (s, v) in [
            ("00:00:00", Some(0)),
            ("5:00:00", Some(18_000)),
            ("09:30:00", Some(34_200)),
            ("23:59:59", Some(86_399)),
            ("24:00:00", Some(86_400)),
        ] {
            assert_eq!(time_s(s), v, "{s}");
        }
        for s in [
            "24:00:01",
            "25:00:00",
            "9:60:00",
            "9:00",
            "9:00:0",
            "123:00:00",
            "a:00:00",
        ] {
            assert_eq!(time_s(s), None, "{s}");
        }
    }
}
