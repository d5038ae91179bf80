//! The notification emails, rendered from the template files in `services/notification/templates/`
//! with minijinja: a text and an HTML template per kind of notification, the HTML ones sharing
//! `layout.html` and `lines.html`. Values are escaped in the HTML (by the `.html` extension), so
//! a name such as `<script>` is shown, never run; the text part shows them as they are.

use minijinja::Environment;
use serde::Serialize;

/// The template files, compiled into the binary.
const FILES: &[(&str, &str)] = &[
    ("layout.html", include_str!("../../templates/layout.html")),
    ("lines.html", include_str!("../../templates/lines.html")),
    ("lines.txt", include_str!("../../templates/lines.txt")),
    ("welcome.txt", include_str!("../../templates/welcome.txt")),
    ("welcome.html", include_str!("../../templates/welcome.html")),
    (
        "order_confirmed.txt",
        include_str!("../../templates/order_confirmed.txt"),
    ),
    (
        "order_confirmed.html",
        include_str!("../../templates/order_confirmed.html"),
    ),
    (
        "order_rejected.txt",
        include_str!("../../templates/order_rejected.txt"),
    ),
    (
        "order_rejected.html",
        include_str!("../../templates/order_rejected.html"),
    ),
    (
        "order_cancelled.txt",
        include_str!("../../templates/order_cancelled.txt"),
    ),
    (
        "order_cancelled.html",
        include_str!("../../templates/order_cancelled.html"),
    ),
];

/// Which email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A new user's welcome.
    Welcome,
    /// An order confirmed.
    OrderConfirmed,
    /// An order rejected.
    OrderRejected,
    /// An order cancelled.
    OrderCancelled,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Welcome => "welcome",
            Kind::OrderConfirmed => "order_confirmed",
            Kind::OrderRejected => "order_rejected",
            Kind::OrderCancelled => "order_cancelled",
        }
    }
}

/// One line of an order, as the emails show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    /// The product.
    pub product_id: String,
    /// How many.
    pub quantity: i32,
    /// The price of one, as money ("12.34").
    pub unit_price: String,
    /// quantity × unit price, as money.
    pub amount: String,
}

impl Line {
    /// A line of `quantity` × `product_id` at `unit_price_cents`.
    pub fn new(product_id: &str, quantity: i32, unit_price_cents: i64) -> Self {
        Self {
            product_id: product_id.to_owned(),
            quantity,
            unit_price: money(unit_price_cents),
            amount: money(unit_price_cents.saturating_mul(i64::from(quantity))),
        }
    }
}

/// What an email says: the person's name (empty when unknown), and for an order its id, lines,
/// total and the reason it was rejected or cancelled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Model {
    /// The subject (the HTML part's title).
    pub subject: String,
    /// Whom it greets; empty: no greeting by name.
    pub name: String,
    /// The order's id (order emails).
    pub order_id: String,
    /// The order's lines (order emails; none in events from before they carried them).
    pub lines: Vec<Line>,
    /// The order's total, as money.
    pub total: String,
    /// Why it was rejected or cancelled.
    pub reason: String,
}

/// An email's two parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
}

/// The templates, parsed once.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Parses every template file (they are part of the binary: a template that does not parse
    /// fails here, at start, and in the tests).
    pub fn new() -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        // Keeps a text template's last line break, as written in the file.
        env.set_keep_trailing_newline(true);
        env.set_trim_blocks(true);
        for (name, source) in FILES {
            env.add_template(name, source)?;
        }
        Ok(Self { env })
    }

    /// Renders the `kind` email for `model`.
    pub fn render(&self, kind: Kind, model: &Model) -> Result<Rendered, minijinja::Error> {
        let part = |extension: &str| {
            self.env
                .get_template(&format!("{}.{extension}", kind.name()))?
                .render(model)
        };
        Ok(Rendered {
            text: part("txt")?.trim_end().to_owned(),
            html: part("html")?,
        })
    }
}

/// Money for people: 1234 cents → "12.34".
pub fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}{}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(subject: &str, reason: &str) -> Model {
        Model {
            subject: subject.into(),
            name: "Ann".into(),
            order_id: "0190f5a0-0000-7000-8000-000000000001".into(),
            lines: vec![Line::new("apple", 3, 120), Line::new("pear", 1, 99)],
            total: money(459),
            reason: reason.into(),
        }
    }

    fn rendered(kind: Kind, model: &Model) -> Rendered {
        Templates::new()
            .expect("the templates parse")
            .render(kind, model)
            .expect("the template renders")
    }

    #[test]
    fn amounts_read_as_money() {
        assert_eq!(money(1234), "12.34");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(0), "0.00");
        assert_eq!(money(-250), "-2.50");
    }

    #[test]
    fn welcome() {
        let model = Model {
            subject: "Welcome to shop".into(),
            name: "Ann".into(),
            ..Model::default()
        };
        let email = rendered(Kind::Welcome, &model);
        insta::assert_snapshot!("welcome.txt", email.text);
        insta::assert_snapshot!("welcome.html", email.html);
    }

    #[test]
    fn order_confirmed() {
        let email = rendered(Kind::OrderConfirmed, &order("Your order is confirmed", ""));
        insta::assert_snapshot!("order_confirmed.txt", email.text);
        insta::assert_snapshot!("order_confirmed.html", email.html);
    }

    #[test]
    fn order_rejected() {
        let model = order(
            "Your order could not be fulfilled",
            "insufficient stock for apple",
        );
        let email = rendered(Kind::OrderRejected, &model);
        insta::assert_snapshot!("order_rejected.txt", email.text);
        insta::assert_snapshot!("order_rejected.html", email.html);
    }

    #[test]
    fn order_cancelled() {
        let model = order(
            "Your order is cancelled",
            "the inventory did not answer within 300 s",
        );
        let email = rendered(Kind::OrderCancelled, &model);
        insta::assert_snapshot!("order_cancelled.txt", email.text);
        insta::assert_snapshot!("order_cancelled.html", email.html);
    }

    #[test]
    fn an_order_email_without_a_name_or_lines_still_reads() {
        let model = Model {
            name: String::new(),
            lines: Vec::new(),
            ..order("Your order is confirmed", "")
        };
        let email = rendered(Kind::OrderConfirmed, &model);
        assert!(
            email.text.starts_with("Your order 0190f5a0"),
            "{}",
            email.text
        );
        assert!(!email.html.contains("<table"), "{}", email.html);
    }

    #[test]
    fn user_data_is_escaped_in_the_html_part_only() {
        let model = Model {
            name: "<script>alert(1)</script> & \"Bob\"".into(),
            lines: vec![Line::new("<b>pear</b>", 1, 100)],
            ..order("Your order is confirmed", "")
        };
        let email = rendered(Kind::OrderConfirmed, &model);
        assert!(!email.html.contains("<script>"), "{}", email.html);
        assert!(
            email
                .html
                .contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt; &amp; &quot;Bob&quot;"),
            "{}",
            email.html
        );
        assert!(
            email.html.contains("&lt;b&gt;pear&lt;&#x2f;b&gt;"),
            "{}",
            email.html
        );
        assert!(
            email.text.contains("<script>alert(1)</script> & \"Bob\""),
            "{}",
            email.text
        );
    }
}
