//! GTFS-Fares v2 import (`fare-validator fares import-gtfs DIR`): a feed's fare files read
//! into a [`FareTable`], with a list of what the table cannot express.
//!
//! Files read (GTFS Schedule reference, "Fares"): `networks.txt`, `route_networks.txt`,
//! `rider_categories.txt`, `fare_media.txt`, `fare_products.txt`, `fare_leg_rules.txt`,
//! `fare_transfer_rules.txt`, `timeframes.txt`. `fare_products.txt` and
//! `fare_leg_rules.txt` are required, the others optional. Every file is read whole with the
//! `csv` crate, its header naming the columns; a row that is not CSV, has the wrong number of
//! fields, lacks a required value, has a number that is not one, or names an id no file
//! defines is a [`GtfsError::Malformed`] with the file and line.
//!
//! How the feed becomes a table, for a validator that sees one boarding at a time:
//!
//! | GTFS | fare table |
//! | --- | --- |
//! | `fare_media.txt` | products of a physical transit card (`fare_media_type` 2) are used, else those with no medium; others are left out |
//! | `rider_categories.txt` | a category whose id or name is a card type (`adult`, `student`, `senior`, `disabled`, `veteran`) prices it; the default category is `adult` |
//! | a leg rule with a `network_id` | `[[networks]]`: the network, its routes (`route_networks.txt`, numeric route ids) and its `base_fare_fen`, the adult product's amount |
//! | a leg rule without | `base_fare_fen` |
//! | another category's product for a leg | `category_percent`, when a whole percentage of the adult amount, the same on every leg |
//! | `fare_transfer_rules.txt` | `[[transfer_rules]]`: leg groups as their networks, `duration_limit` in s, `transfer_count` (−1 unlimited), `fare_transfer_type` 0 `fare_fen`, 1 `discount_fen` (a negative amount), 2 `journey_fare_fen` |
//!
//! Not expressed, and reported: areas (zone fares), leg rules by timeframe (`timeframes.txt`
//! ties them to `calendar.txt` service days), `rule_priority`, duration types other than 1
//! (taken as 1: boarding to boarding), amounts that are not whole percentages, a surcharge
//! on a type-1 transfer, categories with no card type, route ids that are not numbers, and
//! the currency (amounts are taken in its minor unit, as fen).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::{FareTable, Network, TransferRule, BASE_FARE_FEN_MAX, TRANSFER_WINDOW_S_MAX};
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
    rows: Vec<(u64, HashMap<String, String>)>,
}

impl Rows {
    fn read(dir: &Path, name: &str, required: bool) -> Result<Rows, GtfsError> {
        let path = dir.join(name);
        let file = name.to_string();
        if !path.exists() && !required {
            return Ok(Rows {
                file,
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
        Ok(Rows { file, rows })
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

/// Read the feed in `dir`; fields GTFS does not carry (interop, timeframes, `[transfer]`) are
/// `FareTable::default_policy()`'s.
pub fn import_dir(dir: &Path) -> Result<Import, GtfsError> {
    let mut notes = Vec::new();
    let media = read_media(dir)?;
    let categories = read_categories(dir, &mut notes)?;
    let products = read_products(dir, &media, &categories, &mut notes)?;
    let networks = read_networks(dir, &mut notes)?;
    let mut table = FareTable::default_policy();
    let legs = read_leg_rules(dir, &products, &networks, &mut table, &mut notes)?;
    read_transfer_rules(dir, &products, &legs, &mut table, &mut notes)?;
    let timeframes = Rows::read(dir, "timeframes.txt", false)?;
    for (line, row) in &timeframes.rows {
        timeframes.required(*line, row, "timeframe_group_id")?;
    }
    if !timeframes.rows.is_empty() {
        notes.push(format!(
            "timeframes.txt: {} timeframes by service day (calendar.txt): not imported; \
             write [[timeframes]] by hand",
            timeframes.rows.len()
        ));
    }
    let text = toml::to_string(&table).map_err(|e| GtfsError::Table(e.to_string()))?;
    let table = FareTable::from_toml(&text).map_err(|e| GtfsError::Table(e.to_string()))?;
    Ok(Import {
        table,
        not_expressed: notes,
    })
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

fn read_leg_rules(
    dir: &Path,
    products: &Products,
    networks: &BTreeMap<String, Vec<u16>>,
    table: &mut FareTable,
    notes: &mut Vec<String>,
) -> Result<LegGroups, GtfsError> {
    let f = Rows::read(dir, "fare_leg_rules.txt", true)?;
    let mut legs: LegGroups = HashMap::new();
    let mut percents: HashMap<RiderCategory, u8> = HashMap::new();
    for (line, row) in &f.rows {
        let product = f.required(*line, row, "fare_product_id")?;
        if !products.all.contains(product) {
            return Err(f.bad(
                *line,
                format!("fare_product_id {product:?} is not in fare_products.txt"),
            ));
        }
        let network = row.get("network_id").cloned();
        if let Some(n) = &network {
            if !networks.contains_key(n) {
                return Err(f.bad(*line, format!("network_id {n:?} is not in networks.txt")));
            }
        }
        let group = row.get("leg_group_id").cloned();
        let unsupported: Vec<&str> = [
            "from_area_id",
            "to_area_id",
            "from_timeframe_group_id",
            "to_timeframe_group_id",
        ]
        .into_iter()
        .filter(|c| row.contains_key(*c))
        .collect();
        let left_out = if !unsupported.is_empty() {
            Some(format!(
                "{} not expressible on a bus validator",
                unsupported.join(", ")
            ))
        } else if !products.card.contains_key(product) {
            Some(format!("{product:?} has no price for a transit card"))
        } else {
            None
        };
        if let Some(why) = left_out {
            notes.push(format!(
                "fare_leg_rules.txt line {line}: {why}: rule left out"
            ));
            if let Some(g) = group {
                legs.entry(g).or_insert(Err(()));
            }
            continue;
        }
        let prices = &products.card[product];
        if let Some(g) = group {
            legs.insert(g, Ok(network.clone()));
        }
        let Some(&adult) = prices.get(&RiderCategory::Adult) else {
            notes.push(format!(
                "fare_leg_rules.txt line {line}: no adult (default category) price: rule left out"
            ));
            continue;
        };
        let base = Fen::try_from(adult)
            .ok()
            .filter(|f| *f <= BASE_FARE_FEN_MAX)
            .ok_or_else(|| {
                f.bad(
                    *line,
                    format!("product amount {adult} outside 0..=10000 fen"),
                )
            })?;
        match network {
            None => table.base_fare_fen = base,
            Some(n) if table.networks.iter().any(|o| o.network == n) => {
                notes.push(format!(
                    "fare_leg_rules.txt line {line}: a second leg rule for network {n:?}: the first one's fare kept"
                ));
                continue;
            }
            Some(n) => table.networks.push(Network {
                network: n.clone(),
                base_fare_fen: Some(base),
                routes: networks[&n].clone(),
            }),
        }
        let mut others: Vec<(RiderCategory, i64)> = prices
            .iter()
            .filter(|(c, _)| **c != RiderCategory::Adult)
            .map(|(c, a)| (*c, *a))
            .collect();
        others.sort_by_key(|(c, _)| *c as u8);
        for (c, amount) in others {
            let whole = adult > 0 && amount >= 0 && (amount * 100) % adult == 0 && amount <= adult;
            let p = if whole {
                (amount * 100 / adult) as u8
            } else {
                u8::MAX
            };
            if p == u8::MAX || percents.get(&c).is_some_and(|q| *q != p) {
                notes.push(format!(
                    "fare_leg_rules.txt line {line}: {} pays {amount} of {adult}: not one whole percentage on every leg; category_percent.{} left at {}",
                    c.as_str(), c.as_str(), table.percent(c)
                ));
            } else {
                percents.insert(c, p);
            }
        }
        if row.contains_key("rule_priority") {
            notes.push(format!(
                "fare_leg_rules.txt line {line}: rule_priority ignored"
            ));
        }
    }
    for (c, p) in percents {
        let cp = &mut table.category_percent;
        *match c {
            RiderCategory::Adult => &mut cp.adult,
            RiderCategory::Student => &mut cp.student,
            RiderCategory::Senior => &mut cp.senior,
            RiderCategory::Disabled => &mut cp.disabled,
            RiderCategory::Veteran => &mut cp.veteran,
        } = p;
    }
    Ok(legs)
}

fn read_transfer_rules(
    dir: &Path,
    products: &Products,
    legs: &LegGroups,
    table: &mut FareTable,
    notes: &mut Vec<String>,
) -> Result<(), GtfsError> {
    let f = Rows::read(dir, "fare_transfer_rules.txt", false)?;
    for (line, row) in &f.rows {
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
}
