//! Human names of categories, in Chinese and English, for the web form and
//! Open311's `service_name`. A category the table adds without a name here
//! is shown by its code.

/// (code, 中文, English) of the default category table.
const NAMES: [(&str, &str, &str); 18] = [
    ("flood", "洪水", "Flood"),
    ("waterlogging", "积水内涝", "Waterlogging"),
    ("gas_leak", "燃气泄漏", "Gas leak"),
    ("fire", "火灾", "Fire"),
    ("building_collapse", "房屋倒塌", "Building collapse"),
    ("power_outage", "停电", "Power outage"),
    ("water_outage", "停水", "Water outage"),
    ("epidemic", "疫情", "Epidemic"),
    ("noise", "噪音", "Noise"),
    ("road", "道路", "Roads"),
    ("sanitation", "环境卫生", "Sanitation"),
    ("traffic", "交通", "Traffic"),
    ("heating", "供暖", "Heating"),
    ("housing", "住房", "Housing"),
    ("public_transport", "公共交通", "Public transport"),
    ("environment", "环境保护", "Environment"),
    ("market_regulation", "市场监管", "Market regulation"),
    ("other", "其他", "Other"),
];

/// (中文, English) of a category; the code twice when unknown.
pub fn category(code: &str) -> (&str, &str) {
    NAMES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or((code, code), |(_, zh, en)| (*zh, *en))
}
