"""A synthetic but realistic warehouse catalog: columns, lineage, business terms.

    python examples/data_catalog/generate.py --out catalog/ [--columns 30000] [--terms 300] [--seed 0]

Writes
    columns.csv        id,name,table,data_type,domain,source_system,owner,null_fraction,distinct_ratio
    lineage.tsv        upstream column id <TAB> downstream column id   (ETL jobs: raw -> staging -> marts)
    terms.tsv          column id <TAB> business term, for the few percent of columns mapped by hand
    new_columns.csv    the columns of tables that appeared today (same columns as columns.csv)
    new_lineage.tsv    their lineage edges, to known columns and to each other
    new_truth.tsv      the true term of every new column (to check the predictions)

Every business term is an entity and an attribute ("Customer Email", "Invoice Amount"). A column
of a term is named with the synonyms data teams use (cust_email, client_mail, email_address), or
generically (value, col_17) in a share of cases, so that its lineage must tell what it is.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

ENTITIES = {
    "customer": (["customer", "cust", "client", "buyer"], "customer"),
    "order": (["order", "ord", "purchase", "sales_order"], "sales"),
    "invoice": (["invoice", "inv", "bill", "billing_doc"], "finance"),
    "product": (["product", "prod", "item", "sku", "article"], "product"),
    "employee": (["employee", "emp", "staff", "worker"], "hr"),
    "supplier": (["supplier", "vendor", "supp", "provider"], "procurement"),
    "shipment": (["shipment", "shipping", "delivery", "dlv"], "logistics"),
    "ticket": (["ticket", "case", "incident", "request"], "support"),
    "campaign": (["campaign", "cmp", "promo", "marketing_campaign"], "marketing"),
    "account": (["account", "acct", "ledger_account", "gl_account"], "finance"),
    "payment": (["payment", "pmt", "transaction", "txn"], "finance"),
    "contract": (["contract", "agreement", "ctr", "deal"], "sales"),
    "store": (["store", "shop", "outlet", "location"], "retail"),
    "warehouse": (["warehouse", "wh", "depot", "dc"], "logistics"),
    "lead": (["lead", "prospect", "opportunity", "opp"], "marketing"),
    "subscription": (["subscription", "sub", "plan", "membership"], "product"),
}
ATTRIBUTES = {
    "id": (["id", "key", "number", "no", "code"], ["bigint", "varchar(36)", "integer"]),
    "name": (["name", "full_name", "title", "label"], ["varchar(255)", "text"]),
    "email": (["email", "email_address", "mail", "e_mail"], ["varchar(255)"]),
    "phone": (["phone", "phone_number", "tel", "mobile"], ["varchar(32)"]),
    "created date": (["created_at", "create_date", "created", "creation_ts", "dt_created"], ["timestamp", "date"]),
    "updated date": (["updated_at", "modified", "last_update", "upd_ts"], ["timestamp"]),
    "amount": (["amount", "amt", "value", "total"], ["decimal(18,2)", "numeric"]),
    "currency": (["currency", "ccy", "currency_code", "cur"], ["char(3)"]),
    "status": (["status", "state", "stage", "sts"], ["varchar(20)"]),
    "country": (["country", "country_code", "cntry", "nation"], ["char(2)", "varchar(64)"]),
    "city": (["city", "town", "municipality"], ["varchar(128)"]),
    "postal code": (["zip", "postal_code", "postcode", "zip_code"], ["varchar(10)"]),
    "type": (["type", "category", "kind", "class"], ["varchar(50)"]),
    "description": (["description", "desc", "notes", "comment"], ["text"]),
    "quantity": (["quantity", "qty", "units", "count"], ["integer"]),
    "price": (["price", "unit_price", "list_price", "rate"], ["decimal(18,4)"]),
    "discount": (["discount", "disc", "rebate", "markdown"], ["decimal(5,2)"]),
    "tax": (["tax", "vat", "tax_amount", "sales_tax"], ["decimal(18,2)"]),
    "owner": (["owner", "owner_id", "assigned_to", "responsible"], ["varchar(64)"]),
    "region": (["region", "territory", "area", "zone"], ["varchar(32)"]),
}
SOURCES = ["salesforce", "sap_erp", "postgres_app", "stripe", "zendesk", "hubspot", "netsuite", "workday"]
OWNERS = ["data-platform", "finance-analytics", "growth", "ops-bi", "people-analytics", "customer-insights"]
GENERIC = ["value", "field", "attr", "col", "data", "x", "val"]


def column_name(rng: random.Random, term: tuple[str, str]) -> str:
    entity, attribute = term
    if rng.random() < 0.25:  # a generic or cryptic name: only the lineage tells
        return f"{rng.choice(GENERIC)}_{rng.randint(1, 99)}"
    words = [rng.choice(ATTRIBUTES[attribute][0])]
    if rng.random() < 0.8:
        words.insert(0, rng.choice(ENTITIES[entity][0]))
    return "_".join(words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--columns", type=int, default=30000, help="about this many known columns")
    parser.add_argument("--terms", type=int, default=300)
    parser.add_argument("--labelled", type=float, default=0.05, help="share of columns mapped to a term by hand")
    parser.add_argument("--new-tables", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    all_terms = [(e, a) for e in ENTITIES for a in ATTRIBUTES]
    terms = rng.sample(all_terms, min(args.terms, len(all_terms)))
    term_name = {t: f"{t[0].title()} {t[1].title()}" for t in terms}

    rows: list[list[str]] = []
    truth: list[tuple[str, str]] = []
    edges: list[tuple[str, str]] = []
    by_term: dict[tuple[str, str], list[str]] = {t: [] for t in terms}

    def add_table(layer: str, source: str, table: str, table_terms: list[tuple[str, str]], new: bool
                  ) -> list[tuple[str, tuple[str, str]]]:
        made = []
        for i, term in enumerate(table_terms):
            column_id = f"{layer}.{source}.{table}.c{i}"
            data_type = rng.choice(ATTRIBUTES[term[1]][1])
            null = "" if rng.random() < 0.1 else f"{rng.betavariate(1, 8):.3f}"
            distinct = "" if rng.random() < 0.1 else f"{min(1.0, rng.betavariate(2, 2) + (0.5 if term[1] == 'id' else 0)):.3f}"
            rows.append([column_id, column_name(rng, term), table, data_type, ENTITIES[term[0]][1], source,
                         rng.choice(OWNERS), null, distinct, "new" if new else "known"])
            truth.append((column_id, term_name[term]))
            made.append((column_id, term))
        return made

    def upstream_of(term: tuple[str, str]) -> str | None:
        pool = by_term[term]
        return rng.choice(pool) if pool else None

    def build(layer_tables: int, new: bool) -> None:
        for t in range(layer_tables):
            entity = rng.choice(list(ENTITIES))
            own = [x for x in terms if x[0] == entity]
            other = [x for x in terms if x[0] != entity]
            table_terms = rng.sample(own, min(len(own), rng.randint(4, 9))) + rng.sample(other, rng.randint(0, 3))
            layer = rng.choices(["raw", "stg", "mart"], [0.4, 0.35, 0.25])[0] if not new else rng.choice(["stg", "mart"])
            source = rng.choice(SOURCES)
            table = f"{rng.choice(ENTITIES[entity][0])}_{rng.choice(['dim', 'fact', 'snapshot', 'daily', 'hist', 'v2', 'clean'])}{t}"
            made = add_table(layer, source, ("new_" if new else "") + table, table_terms, new)
            for column_id, term in made:
                if layer != "raw" or new:
                    for _ in range(rng.choice([1, 1, 2, 3])):
                        source_term = term if rng.random() < 0.85 else rng.choice(terms)
                        upstream = upstream_of(source_term)
                        if upstream is not None:
                            edges.append((upstream, column_id))
                if not new:
                    by_term[term].append(column_id)

    tables = max(1, args.columns // 8)
    build(tables, new=False)
    known_rows = len(rows)
    build(args.new_tables, new=True)
    args.out.mkdir(parents=True, exist_ok=True)
    header = "id,name,table,data_type,domain,source_system,owner,null_fraction,distinct_ratio\n"

    def write_columns(path: Path, selected: list[list[str]]) -> None:
        with open(path, "w") as f:
            f.write(header)
            for r in selected:
                f.write(",".join(f'"{v}"' if "," in v else v for v in r[:-1]) + "\n")

    write_columns(args.out / "columns.csv", rows[:known_rows])
    write_columns(args.out / "new_columns.csv", rows[known_rows:])
    new_ids = {r[0] for r in rows[known_rows:]}
    with open(args.out / "lineage.tsv", "w") as f, open(args.out / "new_lineage.tsv", "w") as g:
        for a, b in dict.fromkeys(edges):  # an ETL job reading a column twice is one lineage edge
            (g if a in new_ids or b in new_ids else f).write(f"{a}\t{b}\n")
    labelled = rng.sample(range(known_rows), max(1, int(args.labelled * known_rows)))
    with open(args.out / "terms.tsv", "w") as f:
        for i in sorted(labelled):
            f.write(f"{truth[i][0]}\t{truth[i][1]}\n")
    with open(args.out / "new_truth.tsv", "w") as f:
        for column_id, term in truth[known_rows:]:
            f.write(f"{column_id}\t{term}\n")
    print(f"{known_rows:,} columns, {len(set(edges)):,} lineage edges, {len(terms)} terms, {len(labelled):,} labelled; "
          f"{len(rows) - known_rows} new columns -> {args.out}")


if __name__ == "__main__":
    main()
