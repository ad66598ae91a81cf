//! Which district a reported place is in, for Open311 requests that give a
//! point (`lat`/`long`) or an address but no `attribute[district]`.
//!
//! Method: each district of the shipped Beijing table has an approximate
//! centre and its land area (`intake-core/data/beijing-district-centroids.csv`).
//! A point goes to the district whose centre is nearest in units of that
//! district's equivalent radius, sqrt(area / pi): great-circle distance
//! divided by the radius (a multiplicatively weighted Voronoi diagram).
//! Plain nearest-centre would hand much of Chaoyang, which wraps around
//! tiny Dongcheng, to Dongcheng; the weighting fixes that. A point farther
//! than [`MAX_KM_FROM_CENTRE`] from every centre is outside the city.
//! Accuracy: right deep inside a district; near a boundary (within a few
//! kilometres, more for the large outer districts) it can be wrong, since
//! real borders are not circles. Send `attribute[district]` when it matters. An address
//! names its district when it contains the district's Chinese or English
//! name (`朝阳区`, `Chaoyang`). A city loading its own district table gets
//! address matching only, until it ships centres of its own.

use intake_core::DistrictTable;
use intake_core::district::BEIJING_CENTROIDS_CSV;

/// Farther than this from every district centre is outside the city.
pub const MAX_KM_FROM_CENTRE: f64 = 60.0;

#[derive(Debug, Clone, PartialEq)]
struct Centre {
    code: String,
    lat: f64,
    lon: f64,
    /// sqrt(area / pi), km: the radius of a disc of the district's area.
    radius_km: f64,
}

/// Finds districts by point or by address, for one district table.
#[derive(Debug, Clone, Default)]
pub struct Locator {
    centres: Vec<Centre>,
    /// (name, code), longest names first so `西城区` wins over a shorter match.
    names: Vec<(String, String)>,
}

impl Locator {
    /// A locator for `table`: centres for the codes the shipped centre list
    /// has, names for every district.
    pub fn for_table(table: &DistrictTable) -> Self {
        let centres = parse_centres(BEIJING_CENTROIDS_CSV)
            .into_iter()
            .filter(|c| table.contains(&c.code))
            .collect();
        let mut names: Vec<(String, String)> = table
            .iter()
            .flat_map(|d| {
                let short_zh = d.name_zh.trim_end_matches('区').to_string();
                [d.name_zh.clone(), d.name_en.clone(), short_zh]
                    .into_iter()
                    .filter(|n| n.chars().count() >= 2)
                    .map(|n| (n.to_lowercase(), d.code.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        names.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
        Self { centres, names }
    }

    /// Whether any point can be placed (the table has centres).
    pub fn has_centres(&self) -> bool {
        !self.centres.is_empty()
    }

    /// The district whose centre is nearest to the point in radii (see the
    /// module's doc), if any centre is within [`MAX_KM_FROM_CENTRE`].
    pub fn by_point(&self, lat: f64, lon: f64) -> Option<&str> {
        if !(lat.is_finite() && lon.is_finite()) {
            return None;
        }
        let distances: Vec<(f64, &Centre)> = self
            .centres
            .iter()
            .map(|c| (km_between(lat, lon, c.lat, c.lon), c))
            .collect();
        if !distances.iter().any(|(d, _)| *d <= MAX_KM_FROM_CENTRE) {
            return None;
        }
        distances
            .into_iter()
            .min_by(|a, b| (a.0 / a.1.radius_km).total_cmp(&(b.0 / b.1.radius_km)))
            .map(|(_, c)| c.code.as_str())
    }

    /// The district an address names, if it names exactly one.
    pub fn by_address(&self, address: &str) -> Option<&str> {
        let lower = address.to_lowercase();
        let mut found = self
            .names
            .iter()
            .filter(|(n, _)| lower.contains(n.as_str()))
            .map(|(_, code)| code.as_str());
        let first = found.next()?;
        found.all(|c| c == first).then_some(first)
    }
}

fn parse_centres(csv: &str) -> Vec<Centre> {
    csv.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("code"))
        .filter_map(|l| {
            let mut cols = l.split(',').map(str::trim);
            let code = cols.next()?.to_string();
            let lat = cols.next()?.parse().ok()?;
            let lon = cols.next()?.parse().ok()?;
            let area: f64 = cols.next()?.parse().ok()?;
            let radius_km = (area / std::f64::consts::PI).sqrt();
            (radius_km > 0.0).then_some(Centre {
                code,
                lat,
                lon,
                radius_km,
            })
        })
        .collect()
}

/// Great-circle distance in kilometres (haversine).
fn km_between(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    const EARTH_KM: f64 = 6371.0;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_KM * a.sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_beijing_district_has_a_centre() {
        let table = DistrictTable::beijing();
        let centres = parse_centres(BEIJING_CENTROIDS_CSV);
        assert_eq!(centres.len(), table.len());
        assert!(centres.iter().all(|c| table.contains(&c.code)));
    }

    #[test]
    fn landmarks_land_in_their_districts() {
        let l = Locator::for_table(&DistrictTable::beijing());
        // (place, lat, lon, district): well-known points, away from borders.
        for (place, lat, lon, code) in [
            ("Tiananmen / Forbidden City", 39.916, 116.397, "110101"),
            ("Financial Street", 39.915, 116.357, "110102"),
            ("CBD, Guomao", 39.909, 116.461, "110105"),
            ("Olympic Park", 39.993, 116.397, "110105"),
            ("Beijing South station", 39.865, 116.379, "110106"),
            ("Peking University", 39.992, 116.306, "110108"),
            ("Tongzhou city centre", 39.909, 116.657, "110112"),
            ("Capital Airport", 40.080, 116.603, "110113"),
            ("Daxing Airport", 39.509, 116.411, "110115"),
            ("Mutianyu Great Wall", 40.431, 116.570, "110116"),
            ("Badaling Great Wall", 40.359, 116.020, "110119"),
            ("Miyun Reservoir", 40.520, 116.950, "110118"),
        ] {
            assert_eq!(l.by_point(lat, lon), Some(code), "{place}");
        }
        assert_eq!(l.by_point(31.23, 121.47), None, "Shanghai is not in Beijing");
        assert_eq!(l.by_point(f64::NAN, 116.4), None);
    }

    #[test]
    fn addresses_name_their_district() {
        let l = Locator::for_table(&DistrictTable::beijing());
        assert_eq!(l.by_address("北京市朝阳区建国路88号"), Some("110105"));
        assert_eq!(l.by_address("88 Jianguo Rd, Chaoyang, Beijing"), Some("110105"));
        assert_eq!(l.by_address("somewhere"), None);
        assert_eq!(l.by_address("朝阳区 or 海淀区"), None, "two districts named");
    }
}
