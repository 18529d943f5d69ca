//! The SQL database (PostgreSQL): statements named by intent ([`SqlStmt`]) inside explicit
//! transactions ([`SqlOp`]), over tables each race family declares ([`Table`], [`TableDef`]). The semantics are
//! PostgreSQL READ COMMITTED: row locks, a conditional `UPDATE` re-checked after the lock
//! holder commits, unique violations, rollback undoing everything. The rules a statement
//! must follow before it touches any row are [`SqlStmt::validate`]'s, the one copy the SQL
//! model and the PostgreSQL adapter share.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A column value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// A `bigint`.
    Int(i64),
    /// A `text`.
    Text(String),
}

/// A row: column name to value. Every table has a `text` primary key column named `key`,
/// which is not part of the map.
pub type Row = BTreeMap<String, Value>;

/// A row as returned by a statement: its key and its columns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyedRow {
    /// The primary key.
    pub key: String,
    /// The other columns.
    pub columns: Row,
}

impl KeyedRow {
    /// The integer in `column`, if it holds one.
    pub fn int(&self, column: &str) -> Option<i64> {
        match self.columns.get(column) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        }
    }
}

/// A comparison operator in a [`Cond`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// The operator as SQL writes it.
    pub fn as_sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A `bigint` result out of range (SQLSTATE 22003): the error an overflowing expression
/// raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("22003: bigint out of range")]
pub struct OutOfRange;

impl OutOfRange {
    /// The reply a store gives: an error with this text.
    pub fn reply(self) -> SqlReply {
        SqlReply::Error(self.to_string())
    }
}

/// A scalar expression over one row: its columns, constants (sent as statement parameters),
/// `EXCLUDED` (the row `INSERT ... ON CONFLICT DO UPDATE` proposed) and `bigint` arithmetic.
/// `NULL` in arithmetic gives `NULL`; a result out of range is 22003, as in PostgreSQL.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Expr {
    /// A column of the row (or `key`).
    Col(String),
    /// A constant.
    Const(Value),
    /// `EXCLUDED.column` (only inside `ON CONFLICT DO UPDATE`).
    Excluded(String),
    /// `left + right` (`bigint`).
    Add(Box<Expr>, Box<Expr>),
    /// `left - right` (`bigint`).
    Sub(Box<Expr>, Box<Expr>),
}

/// The row an expression is evaluated on.
#[derive(Clone, Copy, Debug)]
pub struct RowRef<'a> {
    /// The row's table (for the columns' types).
    pub table: Table,
    /// The row's key.
    pub key: &'a str,
    /// The row's other columns.
    pub row: &'a Row,
    /// The row `INSERT ... ON CONFLICT DO UPDATE` proposed, if any.
    pub excluded: Option<&'a Row>,
}

impl Expr {
    /// A column.
    pub fn col(column: &str) -> Expr {
        Expr::Col(column.to_string())
    }

    /// An integer constant.
    pub fn int(n: i64) -> Expr {
        Expr::Const(Value::Int(n))
    }

    /// `EXCLUDED.column`.
    pub fn excluded(column: &str) -> Expr {
        Expr::Excluded(column.to_string())
    }

    /// `self + other`.
    pub fn plus(self, other: Expr) -> Expr {
        Expr::Add(Box::new(self), Box::new(other))
    }

    /// `self - other`.
    pub fn minus(self, other: Expr) -> Expr {
        Expr::Sub(Box::new(self), Box::new(other))
    }

    /// The static type in `table` (`None`: an untyped `NULL` constant, which fits any type).
    /// Arithmetic is `bigint`; an unknown column is taken as `text` (validation refuses it).
    pub fn ty(&self, table: Table) -> Option<ColumnType> {
        match self {
            Expr::Col(c) | Expr::Excluded(c) if c == KEY_COLUMN => Some(ColumnType::Text),
            Expr::Col(c) | Expr::Excluded(c) => {
                Some(table.column_type(c).unwrap_or(ColumnType::Text))
            }
            Expr::Const(Value::Null) => None,
            Expr::Const(Value::Int(_)) | Expr::Add(..) | Expr::Sub(..) => Some(ColumnType::Int),
            Expr::Const(Value::Text(_)) => Some(ColumnType::Text),
        }
    }

    /// How many arithmetic operators the expression computes.
    fn operators(&self) -> usize {
        match self {
            Expr::Col(_) | Expr::Const(_) | Expr::Excluded(_) => 0,
            Expr::Add(l, r) | Expr::Sub(l, r) => 1 + l.operators() + r.operators(),
        }
    }

    /// Whether the expression holds no column: PostgreSQL computes it when it plans the
    /// statement (its parameters are constants then), before it reads any row.
    pub fn is_constant(&self) -> bool {
        match self {
            Expr::Const(_) => true,
            Expr::Col(_) | Expr::Excluded(_) => false,
            Expr::Add(l, r) | Expr::Sub(l, r) => l.is_constant() && r.is_constant(),
        }
    }

    /// Computes every constant arithmetic subexpression, as PostgreSQL's planner does:
    /// 22003 if one overflows, whatever the rows.
    pub fn fold_constants(&self) -> Result<(), OutOfRange> {
        match self {
            Expr::Add(l, r) | Expr::Sub(l, r) => {
                if self.is_constant() {
                    self.eval_constant().map(|_| ())
                } else {
                    l.fold_constants()?;
                    r.fold_constants()
                }
            }
            _ => Ok(()),
        }
    }

    fn eval_constant(&self) -> Result<Value, OutOfRange> {
        match self {
            Expr::Const(v) => Ok(v.clone()),
            Expr::Add(l, r) => arith(l.eval_constant()?, r.eval_constant()?, i64::checked_add),
            Expr::Sub(l, r) => arith(l.eval_constant()?, r.eval_constant()?, i64::checked_sub),
            Expr::Col(_) | Expr::Excluded(_) => Ok(Value::Null),
        }
    }

    /// The value on a row. A column the row lacks is `NULL`; arithmetic on anything but two
    /// integers is `NULL` (validation refuses text operands).
    pub fn eval(&self, at: &RowRef<'_>) -> Result<Value, OutOfRange> {
        self.eval_ref(at).map(Val::to_value)
    }

    /// [`Expr::eval`] without copying: the value borrowed from the expression or the row.
    fn eval_ref<'a>(&'a self, at: &RowRef<'a>) -> Result<Val<'a>, OutOfRange> {
        match self {
            Expr::Const(v) => Ok(Val::of(v)),
            Expr::Col(c) | Expr::Excluded(c) if c == KEY_COLUMN => Ok(Val::Text(at.key)),
            Expr::Col(c) => Ok(at.row.get(c).map_or(Val::Null, Val::of)),
            Expr::Excluded(c) => Ok(at
                .excluded
                .and_then(|r| r.get(c))
                .map_or(Val::Null, Val::of)),
            Expr::Add(l, r) => arith_ref(l.eval_ref(at)?, r.eval_ref(at)?, i64::checked_add),
            Expr::Sub(l, r) => arith_ref(l.eval_ref(at)?, r.eval_ref(at)?, i64::checked_sub),
        }
    }
}

/// A [`Value`] borrowed from an expression or a row (what evaluation computes without
/// copying text).
#[derive(Clone, Copy)]
enum Val<'a> {
    Null,
    Int(i64),
    Text(&'a str),
}

impl<'a> Val<'a> {
    fn of(v: &'a Value) -> Val<'a> {
        match v {
            Value::Null => Val::Null,
            Value::Int(n) => Val::Int(*n),
            Value::Text(t) => Val::Text(t),
        }
    }

    fn to_value(self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Int(n) => Value::Int(n),
            Val::Text(t) => Value::Text(t.to_string()),
        }
    }
}

/// [`arith`] on borrowed values.
fn arith_ref<'a>(
    l: Val<'a>,
    r: Val<'a>,
    f: fn(i64, i64) -> Option<i64>,
) -> Result<Val<'a>, OutOfRange> {
    match (l, r) {
        (Val::Int(a), Val::Int(b)) => f(a, b).map(Val::Int).ok_or(OutOfRange),
        _ => Ok(Val::Null),
    }
}

/// `bigint` arithmetic: `NULL` if either side is not an integer, 22003 on overflow.
fn arith(l: Value, r: Value, f: fn(i64, i64) -> Option<i64>) -> Result<Value, OutOfRange> {
    match (l, r) {
        (Value::Int(a), Value::Int(b)) => f(a, b).map(Value::Int).ok_or(OutOfRange),
        _ => Ok(Value::Null),
    }
}

/// A `WHERE` condition over one row (in addition to the key match).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Cond {
    /// Always true.
    True,
    /// `left op right`. A comparison with `NULL` is false (SQL's unknown); so is one of an
    /// integer with text (PostgreSQL would reject it; racelab never casts), decided from
    /// the static types without computing either side.
    Cmp {
        /// The left side.
        left: Expr,
        /// The operator.
        op: CmpOp,
        /// The right side.
        right: Expr,
    },
    /// All of them.
    And(Vec<Cond>),
    /// Any of them.
    Or(Vec<Cond>),
}

impl Cond {
    /// `column op value`.
    pub fn cmp(column: &str, op: CmpOp, value: Value) -> Cond {
        Cond::Cmp {
            left: Expr::col(column),
            op,
            right: Expr::Const(value),
        }
    }

    /// `left op right`.
    pub fn compare(left: Expr, op: CmpOp, right: Expr) -> Cond {
        Cond::Cmp { left, op, right }
    }

    /// Whether a comparison is false whatever the row: its sides' types differ, or one side
    /// is the constant `NULL` (which PostgreSQL folds away without computing the other).
    pub fn statically_false(table: Table, left: &Expr, right: &Expr) -> bool {
        let null = |e: &Expr| matches!(e, Expr::Const(Value::Null));
        if null(left) || null(right) {
            return true;
        }
        matches!((left.ty(table), right.ty(table)), (Some(a), Some(b)) if a != b)
    }

    /// Evaluates the condition on a row, left to right (`AND` and `OR` stop at the first
    /// side that decides them); 22003 if an expression it computes overflows.
    pub fn eval(&self, at: &RowRef<'_>) -> Result<bool, OutOfRange> {
        match self {
            Cond::True => Ok(true),
            Cond::And(all) => {
                for c in all {
                    if !c.eval(at)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Cond::Or(any) => {
                for c in any {
                    if c.eval(at)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Cond::Cmp { left, op, right } => {
                if Cond::statically_false(at.table, left, right) {
                    return Ok(false);
                }
                compare(left, *op, right, at)
            }
        }
    }

    /// Evaluates the condition as the qualifier of a scan's, an `UPDATE`'s or a `DELETE`'s
    /// `WHERE` clause, the way PostgreSQL's planner arranges it: first constant folding
    /// ([`Cond::eval_folded`]), then the top-level `AND` is flattened into a list of conjuncts
    /// that run cheapest first (by their number of operators), stopping at the first false
    /// one. Among conjuncts of the same cost the equalities come last, in written order: the
    /// planner turns a top-level `a = b` into an equivalence class and puts the clause it
    /// generates back after the other qualifiers (so `qty + 0 = lease_until AND qty + 2 <>
    /// lease_until` computes `qty + 2` first and fails with 22003 where `qty + 0 <
    /// lease_until AND ...` stops at its false first side). (`ON CONFLICT DO UPDATE ...
    /// WHERE` is not reordered: use [`Cond::eval_folded`].)
    pub fn eval_where(&self, at: &RowRef<'_>) -> Result<bool, OutOfRange> {
        self.eval_conjuncts(at, false)
    }

    /// As [`Cond::eval_where`], for the guard of a statement that reaches its row by the
    /// primary key (`UPDATE` and `DELETE ... WHERE key = $1 AND guard`): PostgreSQL's index
    /// scan on the key leaves out of its filter every conjunct that the key's equality alone
    /// proves (`key = $1` itself, an `OR` with such an arm, an `AND` of such), so these are
    /// never computed (`key = 'k' AND (qty + 2 = lease_until OR key = 'k')` cannot overflow).
    pub fn eval_where_by_key(&self, at: &RowRef<'_>) -> Result<bool, OutOfRange> {
        self.eval_conjuncts(at, true)
    }

    fn eval_conjuncts(&self, at: &RowRef<'_>, by_key: bool) -> Result<bool, OutOfRange> {
        let by_key = by_key.then_some(at.key);
        self.plan_where(at.table, by_key).eval(at)
    }

    /// The qualifier [`Cond::eval_where`] computes on a row of `table` (with `by_key`, for
    /// [`Cond::eval_where_by_key`] on the row of that key), planned once: it depends on the
    /// table alone, not on the row.
    fn plan_where(&self, table: Table, by_key: Option<&str>) -> Plan<'_> {
        let folded = match self.fold_ref(table) {
            FoldedRef::Const(b) => return Plan::Const(b),
            FoldedRef::Node(n) => n,
        };
        let mut conjuncts = Vec::new();
        folded.flatten_and(&mut conjuncts);
        if let Some(key) = by_key {
            conjuncts.retain(|c| !c.implied_by_key(key));
        }
        conjuncts.sort_by_key(|c| (c.operators(), c.is_equality()));
        Plan::Conjuncts(conjuncts)
    }

    /// [`Cond::eval_where`] on each row in turn, in the order given: the rows that pass,
    /// or the first row's 22003 (the rows after it are not evaluated). The same as calling
    /// [`Cond::eval_where`] on each, with the clause planned once for all of them.
    pub fn filter_where<'r>(
        &self,
        table: Table,
        rows: impl IntoIterator<Item = (&'r str, &'r Row)>,
    ) -> Result<Vec<(&'r str, &'r Row)>, OutOfRange> {
        let plan = self.plan_where(table, None);
        let mut passing = Vec::new();
        for (key, row) in rows {
            let at = RowRef {
                table,
                key,
                row,
                excluded: None,
            };
            if plan.eval(&at)? {
                passing.push((key, row));
            }
        }
        Ok(passing)
    }

    /// Evaluates the condition left to right after PostgreSQL's constant folding: a
    /// comparison false whatever the row (across types, or with the constant `NULL`) is
    /// `FALSE`; an `AND` holding a `FALSE` is `FALSE` and an `OR` holding a `TRUE` is `TRUE`,
    /// without computing their other sides.
    pub fn eval_folded(&self, at: &RowRef<'_>) -> Result<bool, OutOfRange> {
        match self.fold_ref(at.table) {
            FoldedRef::Const(b) => Ok(b),
            FoldedRef::Node(n) => n.eval(at),
        }
    }

    /// The condition after constant folding, borrowing its comparisons.
    fn fold_ref(&self, table: Table) -> FoldedRef<'_> {
        match self {
            Cond::True => FoldedRef::Const(true),
            Cond::Cmp { left, right, .. } if Cond::statically_false(table, left, right) => {
                FoldedRef::Const(false)
            }
            Cond::Cmp { left, op, right } => FoldedRef::Node(Node::Cmp(left, *op, right)),
            Cond::And(all) | Cond::Or(all) => {
                let and = matches!(self, Cond::And(_));
                let mut kept = Vec::new();
                for c in all {
                    match c.fold_ref(table) {
                        // FALSE decides an AND, TRUE an OR.
                        FoldedRef::Const(b) if b != and => return FoldedRef::Const(b),
                        FoldedRef::Const(_) => {}
                        FoldedRef::Node(n) => kept.push(n),
                    }
                }
                match (kept.len(), and) {
                    (0, _) => FoldedRef::Const(and),
                    (1, _) => FoldedRef::Node(kept.remove(0)),
                    (_, true) => FoldedRef::Node(Node::And(kept)),
                    (_, false) => FoldedRef::Node(Node::Or(kept)),
                }
            }
        }
    }

    /// [`Cond::eval`] on a row of `table` with this key (no `EXCLUDED` row).
    pub fn holds_on(&self, table: Table, key: &str, row: &Row) -> Result<bool, OutOfRange> {
        self.eval(&RowRef {
            table,
            key,
            row,
            excluded: None,
        })
    }

    /// Computes the constant arithmetic in the condition (see [`Expr::fold_constants`]).
    pub fn fold_constants(&self) -> Result<(), OutOfRange> {
        match self {
            Cond::True => Ok(()),
            Cond::Cmp { left, right, .. } => {
                left.fold_constants()?;
                right.fold_constants()
            }
            Cond::And(all) | Cond::Or(all) => all.iter().try_for_each(Cond::fold_constants),
        }
    }
}

/// `left op right` on a row, its sides' static types already known to agree: `NULL`
/// (or values of different kinds) compare false.
fn compare(left: &Expr, op: CmpOp, right: &Expr, at: &RowRef<'_>) -> Result<bool, OutOfRange> {
    let ordering = match (left.eval_ref(at)?, right.eval_ref(at)?) {
        (Val::Int(a), Val::Int(b)) => a.cmp(&b),
        // Equality of texts, the common case, is decided by their lengths first.
        (Val::Text(a), Val::Text(b)) if matches!(op, CmpOp::Eq) => return Ok(a == b),
        (Val::Text(a), Val::Text(b)) if matches!(op, CmpOp::Ne) => return Ok(a != b),
        (Val::Text(a), Val::Text(b)) => a.cmp(b),
        _ => return Ok(false),
    };
    Ok(match op {
        CmpOp::Eq => ordering.is_eq(),
        CmpOp::Ne => ordering.is_ne(),
        CmpOp::Lt => ordering.is_lt(),
        CmpOp::Le => ordering.is_le(),
        CmpOp::Gt => ordering.is_gt(),
        CmpOp::Ge => ordering.is_ge(),
    })
}

/// A condition after constant folding: a constant, or what is left to compute.
enum FoldedRef<'a> {
    Const(bool),
    Node(Node<'a>),
}

/// What is left of a condition after constant folding, borrowing the condition's
/// comparisons: no `TRUE` and no comparison false whatever the row.
enum Node<'a> {
    Cmp(&'a Expr, CmpOp, &'a Expr),
    And(Vec<Node<'a>>),
    Or(Vec<Node<'a>>),
}

impl<'a> Node<'a> {
    /// [`Cond::eval`] on the folded condition: left to right, `AND` and `OR` stopping at
    /// the first side that decides them.
    fn eval(&self, at: &RowRef<'_>) -> Result<bool, OutOfRange> {
        match self {
            Node::Cmp(left, op, right) => compare(left, *op, right, at),
            Node::And(all) => {
                for c in all {
                    if !c.eval(at)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Node::Or(any) => {
                for c in any {
                    if c.eval(at)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }

    /// The conjuncts of a top-level `AND` (nested ones flattened).
    fn flatten_and(self, out: &mut Vec<Node<'a>>) {
        match self {
            Node::And(all) => all.into_iter().for_each(|c| c.flatten_and(out)),
            other => out.push(other),
        }
    }

    /// Whether `key = 'key'` proves the condition: that comparison itself (either way round),
    /// an `OR` with such an arm, an `AND` of such (the cases of PostgreSQL's predicate proof
    /// that need no operator semantics).
    fn implied_by_key(&self, key: &str) -> bool {
        let is_key = |e: &Expr| matches!(e, Expr::Col(c) if c == KEY_COLUMN);
        let is_this = |e: &Expr| matches!(e, Expr::Const(Value::Text(k)) if k == key);
        match self {
            Node::Cmp(left, CmpOp::Eq, right) => {
                (is_key(left) && is_this(right)) || (is_this(left) && is_key(right))
            }
            Node::Cmp(..) => false,
            Node::Or(any) => any.iter().any(|c| c.implied_by_key(key)),
            Node::And(all) => all.iter().all(|c| c.implied_by_key(key)),
        }
    }

    /// Whether the condition is one comparison with `=` (a clause PostgreSQL's planner makes
    /// an equivalence class of).
    fn is_equality(&self) -> bool {
        matches!(self, Node::Cmp(_, CmpOp::Eq, _))
    }

    /// How many operators (comparisons and arithmetic) the condition computes: PostgreSQL's
    /// cost of a qualifier, every operator here costing the same.
    fn operators(&self) -> usize {
        match self {
            Node::Cmp(left, _, right) => 1 + left.operators() + right.operators(),
            Node::And(all) | Node::Or(all) => all.iter().map(Node::operators).sum(),
        }
    }
}

/// A planned `WHERE` qualifier (see [`Cond::eval_where`]): a constant, or the conjuncts in
/// the order they run.
enum Plan<'a> {
    Const(bool),
    Conjuncts(Vec<Node<'a>>),
}

impl Plan<'_> {
    /// The qualifier on a row: the conjuncts in order, stopping at the first false one.
    fn eval(&self, at: &RowRef<'_>) -> Result<bool, OutOfRange> {
        match self {
            Plan::Const(b) => Ok(*b),
            Plan::Conjuncts(conjuncts) => {
                for c in conjuncts {
                    if !c.eval(at)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        }
    }
}

/// One assignment in an `UPDATE ... SET`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Assign {
    /// `column = value`.
    Set {
        /// The column.
        column: String,
        /// The new value.
        value: Value,
    },
    /// `column = column + delta` (an integer column; `NULL` stays `NULL`, as in SQL).
    Add {
        /// The column.
        column: String,
        /// The increment.
        delta: i64,
    },
    /// `column = expr`, computed on the row before the update (all of a `SET` list's
    /// expressions see the old row, as in SQL).
    To {
        /// The column.
        column: String,
        /// The new value.
        expr: Expr,
    },
}

impl Assign {
    /// `column = expr`.
    pub fn to(column: &str, expr: Expr) -> Assign {
        Assign::To {
            column: column.to_string(),
            expr,
        }
    }

    /// The column assigned.
    pub fn column(&self) -> &str {
        match self {
            Assign::Set { column, .. } | Assign::Add { column, .. } | Assign::To { column, .. } => {
                column
            }
        }
    }
}

/// The name of every table's primary key column (`text`).
const KEY_COLUMN: &str = "key";

/// A table's declaration: its SQL name and its non-key columns with their types. Every table
/// also has the `text` primary key column `key`, which is not listed. A family declares its
/// tables in its own module (`static DEF: TableDef = ...; pub const T: Table =
/// Table::declare(&DEF);`); nothing lists every table: the SQL model learns a table from the
/// seeds and statements that name it, and the PostgreSQL adapter creates it when a statement
/// first names it.
#[derive(Debug, PartialEq, Eq)]
pub struct TableDef {
    /// The SQL name (`[a-z_][a-z0-9_]*`, unique among the tables a run uses).
    pub name: &'static str,
    /// The non-key columns and their types, in declaration order.
    pub columns: &'static [(&'static str, ColumnType)],
}

/// A declared table: a cheap copyable handle on its [`TableDef`]. Two handles are the same
/// table when their names are equal; tables order, hash, print (`Debug` and `Display`) by
/// name. Serialized as its whole declaration, so that a deserialized statement carries the
/// table's columns with it.
#[derive(Clone, Copy)]
pub struct Table(&'static TableDef);

/// The type of a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ColumnType {
    /// `bigint`.
    Int,
    /// `text`.
    Text,
}

impl ColumnType {
    /// The SQL name of the type.
    pub fn sql_name(self) -> &'static str {
        match self {
            ColumnType::Int => "bigint",
            ColumnType::Text => "text",
        }
    }
}

impl Table {
    /// The handle of a declared table.
    pub const fn declare(def: &'static TableDef) -> Table {
        Table(def)
    }

    /// The declaration.
    pub fn def(self) -> &'static TableDef {
        self.0
    }

    /// The SQL name.
    pub fn as_str(self) -> &'static str {
        self.0.name
    }

    /// The declared type of a non-key column, if the table has it.
    pub fn column_type(self, column: &str) -> Option<ColumnType> {
        self.columns()
            .iter()
            .find(|(c, _)| *c == column)
            .map(|(_, t)| *t)
    }

    /// The non-key columns and their types.
    pub fn columns(self) -> &'static [(&'static str, ColumnType)] {
        self.0.columns
    }
}

impl PartialEq for Table {
    fn eq(&self, other: &Table) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for Table {}

impl PartialOrd for Table {
    fn partial_cmp(&self, other: &Table) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Table {
    fn cmp(&self, other: &Table) -> std::cmp::Ordering {
        self.0.name.cmp(other.0.name)
    }
}

impl std::hash::Hash for Table {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.name.hash(state);
    }
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

/// A table's declaration as it travels (see [`Table`]'s serialization).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct TableDecl {
    name: String,
    columns: Vec<(String, ColumnType)>,
}

impl Serialize for Table {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        TableDecl {
            name: self.0.name.to_string(),
            columns: self
                .0
                .columns
                .iter()
                .map(|(c, t)| ((*c).to_string(), *t))
                .collect(),
        }
        .serialize(serializer)
    }
}

/// The declarations deserialized so far in this process, each leaked once: deserializing
/// the same declaration again yields the same `&'static TableDef`, so the memory this takes
/// is bounded by the number of distinct declarations received.
static RECEIVED: std::sync::Mutex<BTreeMap<TableDecl, &'static TableDef>> =
    std::sync::Mutex::new(BTreeMap::new());

impl<'de> Deserialize<'de> for Table {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Table, D::Error> {
        let decl = TableDecl::deserialize(deserializer)?;
        let name_ok = decl
            .name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && decl
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !name_ok {
            return Err(serde::de::Error::custom(format!(
                "table name {:?} is not [a-z_][a-z0-9_]*",
                decl.name
            )));
        }
        for (i, (column, _)) in decl.columns.iter().enumerate() {
            if column == KEY_COLUMN || decl.columns[..i].iter().any(|(c, _)| c == column) {
                return Err(serde::de::Error::custom(format!(
                    "table {} declares column {column:?} twice",
                    decl.name
                )));
            }
        }
        let mut received = RECEIVED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(def) = received.get(&decl) {
            return Ok(Table(def));
        }
        let columns: Vec<(&'static str, ColumnType)> = decl
            .columns
            .iter()
            .map(|(c, t)| (&*Box::leak(c.clone().into_boxed_str()), *t))
            .collect();
        let def: &'static TableDef = Box::leak(Box::new(TableDef {
            name: Box::leak(decl.name.clone().into_boxed_str()),
            columns: Box::leak(columns.into_boxed_slice()),
        }));
        received.insert(decl, def);
        Ok(Table(def))
    }
}

/// A SQL statement, named by intent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SqlStmt {
    /// `SELECT * FROM table WHERE key = $1 [FOR UPDATE]`.
    Select {
        /// The table.
        table: Table,
        /// The key.
        key: String,
        /// `FOR UPDATE`: take the row lock (waits for a holder to finish).
        for_update: bool,
    },
    /// `SELECT * FROM table WHERE filter ORDER BY key [LIMIT n] [FOR UPDATE [SKIP LOCKED]]`
    /// ([`SqlStmt::scan`] builds the plain one). Under READ COMMITTED the candidates are the
    /// rows the statement's snapshot sees passing `filter`, in key order; a locking scan then
    /// takes each one's row lock in turn until it has `limit` rows: `FOR UPDATE` waits for a
    /// row another session holds (keeping the rows it has locked so far) and re-checks
    /// `filter` on the newest version after the wait, dropping the row if it no longer passes
    /// or is gone; `SKIP LOCKED` never waits and skips every row another session holds (locked,
    /// or inserted, updated or deleted without committing).
    Scan {
        /// The table.
        table: Table,
        /// The filter.
        filter: Cond,
        /// Which row locks the scan takes.
        #[serde(default, skip_serializing_if = "ScanLock::is_none")]
        lock: ScanLock,
        /// `LIMIT n`: at most this many rows (`None`: no limit).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
    },
    /// `INSERT INTO table (key, ...) VALUES (...)`. A duplicate key is a unique violation
    /// (after waiting for an uncommitted inserter of the same key, as PostgreSQL does).
    Insert {
        /// The table.
        table: Table,
        /// The key.
        key: String,
        /// The other columns; missing ones are `NULL`.
        row: Row,
    },
    /// `UPDATE table SET ... WHERE key = $1 AND guard RETURNING *`: under READ COMMITTED,
    /// waits for the row lock and re-checks `guard` on the newest committed row.
    Update {
        /// The table.
        table: Table,
        /// The key.
        key: String,
        /// The extra condition.
        guard: Cond,
        /// The assignments.
        set: Vec<Assign>,
    },
    /// `DELETE FROM table WHERE key = $1 AND guard RETURNING *` (the deleted row): takes the
    /// row lock and re-checks `guard` on the newest committed row after a wait, as `UPDATE`
    /// does.
    Delete {
        /// The table.
        table: Table,
        /// The key.
        key: String,
        /// The extra condition.
        guard: Cond,
    },
    /// `INSERT INTO table (key, ...) VALUES (...) ON CONFLICT (key) DO NOTHING | DO UPDATE
    /// SET ... [WHERE guard] RETURNING *`: the row inserted or updated, none if it did
    /// nothing. As in PostgreSQL it first waits for an uncommitted inserter, updater or
    /// deleter of the key; under READ COMMITTED it never fails with a unique violation on
    /// the key.
    Upsert {
        /// The table.
        table: Table,
        /// The key.
        key: String,
        /// The other columns of the row to insert; missing ones are `NULL`.
        row: Row,
        /// What to do when the key exists.
        on_conflict: OnConflict,
    },
}

/// The row locks a [`SqlStmt::Scan`] takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScanLock {
    /// A plain read: no lock, no wait.
    #[default]
    None,
    /// `FOR UPDATE`: locks every row it returns, waiting for other holders.
    ForUpdate,
    /// `FOR UPDATE SKIP LOCKED`: locks every row it returns, skipping the rows another
    /// session holds instead of waiting.
    SkipLocked,
}

impl ScanLock {
    /// Whether this is a plain read ([`ScanLock::None`]).
    pub fn is_none(&self) -> bool {
        *self == ScanLock::None
    }

    /// The SQL locking clause (with a leading space), empty for a plain read.
    pub fn sql(self) -> &'static str {
        match self {
            ScanLock::None => "",
            ScanLock::ForUpdate => " FOR UPDATE",
            ScanLock::SkipLocked => " FOR UPDATE SKIP LOCKED",
        }
    }
}

/// What `INSERT ... ON CONFLICT (key)` does with an existing row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OnConflict {
    /// `DO NOTHING`: no row returned, nothing locked.
    DoNothing,
    /// `DO UPDATE SET ... WHERE guard`: locks the existing row (waiting for any holder, even
    /// a `FOR UPDATE` one), then, if `guard` holds on it, updates it; the row stays locked
    /// even when `guard` is false.
    DoUpdate {
        /// The assignments, over the existing row (and `EXCLUDED`, the row proposed for
        /// insertion, where an expression allows it).
        set: Vec<Assign>,
        /// The condition on the existing row.
        guard: Cond,
    },
}

/// SQL transaction control and statements. A statement outside `BEGIN ... COMMIT` runs in
/// its own transaction (autocommit). Each process has one session.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SqlOp {
    /// `BEGIN` (READ COMMITTED).
    Begin,
    /// A statement (boxed: a statement is large, and every store operation, in flight or
    /// in a history, is as large as its largest kind; [`SqlOp::exec`] builds one).
    Exec(Box<SqlStmt>),
    /// `COMMIT`.
    Commit,
    /// `ROLLBACK`.
    Rollback,
}

impl SqlOp {
    /// The statement `stmt`.
    pub fn exec(stmt: SqlStmt) -> SqlOp {
        SqlOp::Exec(Box::new(stmt))
    }
}

/// The SQL database's answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SqlReply {
    /// `BEGIN` or `ROLLBACK` done.
    Ok,
    /// Rows returned by `SELECT`, `UPDATE ... RETURNING` (the rows after the update).
    Rows(Vec<KeyedRow>),
    /// Rows inserted.
    Affected(u64),
    /// `COMMIT` made the transaction durable.
    Committed,
    /// `COMMIT` of a failed transaction: PostgreSQL rolls it back instead.
    RolledBack,
    /// A unique violation (SQLSTATE 23505); the transaction is now failed.
    UniqueViolation {
        /// The table.
        table: Table,
        /// The duplicate key.
        key: String,
    },
    /// Any other error (SQLSTATE and message); the transaction, if any, is now failed.
    Error(String),
}

/// A statement refused before it reads or locks any row: what PostgreSQL's analysis of the
/// statement rejects over the tables' declarations, plus racelab's stricter rules (no implicit
/// casts, the primary key is never updated). The SQL model and the PostgreSQL adapter both
/// answer these with [`SqlReply::Error`] carrying [`InvalidStmt`]'s text, `SQLSTATE: message`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum InvalidStmt {
    /// 42703: a condition names a column the table does not have.
    #[error("42703: column \"{column}\" does not exist")]
    UnknownColumn {
        /// The column.
        column: String,
    },
    /// 42703: an `INSERT` row or a `SET` list names a column the table does not have.
    #[error("42703: column \"{column}\" of relation \"{}\" does not exist", .table.as_str())]
    NoSuchColumn {
        /// The table.
        table: Table,
        /// The column.
        column: String,
    },
    /// 42701: an `INSERT` row names the key column, which [`SqlStmt::Insert`] already sets.
    #[error("42701: column \"{}\" specified more than once", KEY_COLUMN)]
    KeyInInsertRow,
    /// 42804: a value of another type than its column's (PostgreSQL would sometimes cast
    /// it; racelab never does).
    #[error(
        "42804: column \"{column}\" is of type {} but expression is of type {}",
        .expected.sql_name(),
        .actual.sql_name()
    )]
    WrongType {
        /// The column.
        column: String,
        /// The column's type.
        expected: ColumnType,
        /// The value's type.
        actual: ColumnType,
    },
    /// 42883: `column = column + delta` on a column that is not an integer.
    #[error("42883: operator does not exist: {} + bigint", .column_type.sql_name())]
    AddToNonInteger {
        /// The column's type.
        column_type: ColumnType,
    },
    /// 42883: arithmetic on an operand that is not an integer.
    #[error("42883: operator does not exist: {left} {op} {right}")]
    NoOperator {
        /// The left operand's type name.
        left: &'static str,
        /// `+` or `-`.
        op: char,
        /// The right operand's type name.
        right: &'static str,
    },
    /// 42P01: `EXCLUDED` outside `INSERT ... ON CONFLICT DO UPDATE`.
    #[error("42P01: missing FROM-clause entry for table \"excluded\"")]
    ExcludedOutsideConflict,
    /// 42703: `EXCLUDED.column` of a column the table does not have.
    #[error("42703: column excluded.{column} does not exist")]
    UnknownExcludedColumn {
        /// The column.
        column: String,
    },
    /// 0A000: an `UPDATE` assigns the primary key (PostgreSQL allows it; racelab's row
    /// identity does not).
    #[error(
        "0A000: racelab does not support updating the primary key \"{}\" of relation \"{}\"",
        KEY_COLUMN,
        .table.as_str()
    )]
    KeyUpdate {
        /// The table.
        table: Table,
    },
    /// 42601: an `UPDATE` assigns the same column twice.
    #[error("42601: multiple assignments to same column \"{column}\"")]
    DuplicateAssignment {
        /// The column.
        column: String,
    },
}

impl InvalidStmt {
    /// The SQLSTATE PostgreSQL (or, for racelab's own rules, the adapter) answers with.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            InvalidStmt::UnknownColumn { .. }
            | InvalidStmt::NoSuchColumn { .. }
            | InvalidStmt::UnknownExcludedColumn { .. } => "42703",
            InvalidStmt::NoOperator { .. } => "42883",
            InvalidStmt::ExcludedOutsideConflict => "42P01",
            InvalidStmt::KeyInInsertRow => "42701",
            InvalidStmt::WrongType { .. } => "42804",
            InvalidStmt::AddToNonInteger { .. } => "42883",
            InvalidStmt::KeyUpdate { .. } => "0A000",
            InvalidStmt::DuplicateAssignment { .. } => "42601",
        }
    }

    /// The reply a store gives: an error with this text.
    pub fn reply(&self) -> SqlReply {
        SqlReply::Error(self.to_string())
    }
}

impl SqlStmt {
    /// A plain scan: `SELECT * FROM table WHERE filter ORDER BY key`, no lock, no limit.
    pub fn scan(table: Table, filter: Cond) -> SqlStmt {
        SqlStmt::Scan {
            table,
            filter,
            lock: ScanLock::None,
            limit: None,
        }
    }

    /// This scan with `LIMIT n` (other statements are returned unchanged).
    #[must_use]
    pub fn limit(mut self, n: u64) -> SqlStmt {
        if let SqlStmt::Scan { limit, .. } = &mut self {
            *limit = Some(n);
        }
        self
    }

    /// This scan with the lock mode `mode` (other statements are returned unchanged).
    #[must_use]
    pub fn locking(mut self, mode: ScanLock) -> SqlStmt {
        if let SqlStmt::Scan { lock, .. } = &mut self {
            *lock = mode;
        }
        self
    }

    /// The table the statement names.
    pub fn table(&self) -> Table {
        match self {
            SqlStmt::Select { table, .. }
            | SqlStmt::Scan { table, .. }
            | SqlStmt::Insert { table, .. }
            | SqlStmt::Update { table, .. }
            | SqlStmt::Delete { table, .. }
            | SqlStmt::Upsert { table, .. } => *table,
        }
    }

    /// Checks the statement against its table's declaration ([`TableDef`]) before it reads or locks
    /// any row, in the order PostgreSQL's analysis meets the problems (the first one found is
    /// the answer):
    ///
    /// - `SELECT` by key: nothing to check.
    /// - Scan: every column the filter names exists, or is `key` (42703).
    /// - `INSERT`: first every column name, in the row's order (42701 for `key`, which the
    ///   statement sets already; 42703 for an unknown one), then every value's type (42804;
    ///   `NULL` fits any column).
    /// - `UPDATE`: the guard's columns (42703), then each assignment in order: not `key`
    ///   (0A000), a column the table has (42703), a value of its type (42804) or `+` on an
    ///   integer column (42883), and not assigned before (42601).
    ///
    /// The SQL model and the PostgreSQL adapter both answer an invalid statement with
    /// [`InvalidStmt::reply`], so the two cannot drift apart.
    pub fn validate(&self) -> Result<(), InvalidStmt> {
        match self {
            SqlStmt::Select { .. } => Ok(()),
            SqlStmt::Scan { table, filter, .. } => validate_cond(*table, filter, false),
            SqlStmt::Insert { table, row, .. } => validate_row(*table, row),
            SqlStmt::Delete { table, guard, .. } => validate_cond(*table, guard, false),
            SqlStmt::Upsert {
                table,
                row,
                on_conflict,
                ..
            } => {
                validate_row(*table, row)?;
                match on_conflict {
                    OnConflict::DoNothing => Ok(()),
                    OnConflict::DoUpdate { set, guard } => {
                        validate_set(*table, set, true)?;
                        validate_cond(*table, guard, true)
                    }
                }
            }
            SqlStmt::Update {
                table, guard, set, ..
            } => {
                validate_cond(*table, guard, false)?;
                validate_set(*table, set, false)
            }
        }
    }
}

/// Checks an `INSERT` row: first every column name, in the row's order (42701 for `key`,
/// 42703 for an unknown one), then every value's type (42804; `NULL` fits any column).
fn validate_row(table: Table, row: &Row) -> Result<(), InvalidStmt> {
    let mut types = Vec::with_capacity(row.len());
    for column in row.keys() {
        if column == KEY_COLUMN {
            return Err(InvalidStmt::KeyInInsertRow);
        }
        types.push(column_type(table, column)?);
    }
    for ((column, value), ty) in row.iter().zip(types) {
        validate_value(column, ty, value)?;
    }
    Ok(())
}

/// Checks a `SET` list, each assignment in order: not `key` (0A000), a column the table has
/// (42703), a value of its type (42804) or `+` on an integer column (42883), and not
/// assigned before (42601).
fn validate_set(table: Table, set: &[Assign], excluded: bool) -> Result<(), InvalidStmt> {
    let mut seen: Vec<&str> = Vec::with_capacity(set.len());
    for a in set {
        let column = a.column();
        if column == KEY_COLUMN {
            return Err(InvalidStmt::KeyUpdate { table });
        }
        let ty = column_type(table, column)?;
        match a {
            Assign::Set { value, .. } => validate_value(column, ty, value)?,
            Assign::Add { .. } if ty != ColumnType::Int => {
                return Err(InvalidStmt::AddToNonInteger { column_type: ty });
            }
            Assign::Add { .. } => {}
            Assign::To { expr, .. } => {
                validate_expr(table, expr, excluded)?;
                if let Some(actual) = expr.ty(table)
                    && actual != ty
                {
                    return Err(InvalidStmt::WrongType {
                        column: column.to_string(),
                        expected: ty,
                        actual,
                    });
                }
            }
        }
        if seen.contains(&column) {
            return Err(InvalidStmt::DuplicateAssignment {
                column: column.to_string(),
            });
        }
        seen.push(column);
    }
    Ok(())
}

/// The type of a column an `INSERT` row or a `SET` list names (42703 if the table has none).
fn column_type(table: Table, column: &str) -> Result<ColumnType, InvalidStmt> {
    table
        .column_type(column)
        .ok_or_else(|| InvalidStmt::NoSuchColumn {
            table,
            column: column.to_string(),
        })
}

/// Checks that a value can be stored in a column of type `ty` (42804 otherwise).
fn validate_value(column: &str, ty: ColumnType, value: &Value) -> Result<(), InvalidStmt> {
    let actual = match value {
        Value::Null => return Ok(()),
        Value::Int(_) => ColumnType::Int,
        Value::Text(_) => ColumnType::Text,
    };
    if actual == ty {
        Ok(())
    } else {
        Err(InvalidStmt::WrongType {
            column: column.to_string(),
            expected: ty,
            actual,
        })
    }
}

/// Checks a condition's expressions, left to right ([`validate_expr`]).
fn validate_cond(table: Table, cond: &Cond, excluded: bool) -> Result<(), InvalidStmt> {
    match cond {
        Cond::True => Ok(()),
        Cond::Cmp { left, right, .. } => {
            validate_expr(table, left, excluded)?;
            validate_expr(table, right, excluded)
        }
        Cond::And(conds) | Cond::Or(conds) => conds
            .iter()
            .try_for_each(|c| validate_cond(table, c, excluded)),
    }
}

/// Checks an expression: every column exists in the table or is `key` (42703), `EXCLUDED`
/// only where `excluded` allows it (42P01), arithmetic only on integers (42883).
fn validate_expr(table: Table, expr: &Expr, excluded: bool) -> Result<(), InvalidStmt> {
    let known = |c: &str| c == KEY_COLUMN || table.column_type(c).is_some();
    match expr {
        Expr::Const(_) => Ok(()),
        Expr::Col(c) if known(c) => Ok(()),
        Expr::Col(c) => Err(InvalidStmt::UnknownColumn { column: c.clone() }),
        Expr::Excluded(_) if !excluded => Err(InvalidStmt::ExcludedOutsideConflict),
        Expr::Excluded(c) if known(c) => Ok(()),
        Expr::Excluded(c) => Err(InvalidStmt::UnknownExcludedColumn { column: c.clone() }),
        Expr::Add(l, r) | Expr::Sub(l, r) => {
            validate_expr(table, l, excluded)?;
            validate_expr(table, r, excluded)?;
            let name = |e: &Expr| e.ty(table).unwrap_or(ColumnType::Int).sql_name();
            if l.ty(table) == Some(ColumnType::Text) || r.ty(table) == Some(ColumnType::Text) {
                return Err(InvalidStmt::NoOperator {
                    left: name(l),
                    op: if matches!(expr, Expr::Add(..)) {
                        '+'
                    } else {
                        '-'
                    },
                    right: name(r),
                });
            }
            Ok(())
        }
    }
}

impl SqlStmt {
    /// Computes the statement's constant arithmetic, as PostgreSQL's planner does before any
    /// row is read: 22003 if some constant expression overflows.
    pub fn fold_constants(&self) -> Result<(), OutOfRange> {
        let set = |set: &[Assign]| {
            set.iter().try_for_each(|a| match a {
                Assign::To { expr, .. } => expr.fold_constants(),
                _ => Ok(()),
            })
        };
        match self {
            SqlStmt::Select { .. } | SqlStmt::Insert { .. } => Ok(()),
            SqlStmt::Scan { limit, .. } if limit.is_some_and(|n| i64::try_from(n).is_err()) => {
                // `LIMIT n` is a bigint.
                Err(OutOfRange)
            }
            SqlStmt::Scan { filter: c, .. } | SqlStmt::Delete { guard: c, .. } => {
                c.fold_constants()
            }
            SqlStmt::Update { guard, set: s, .. } => {
                set(s)?;
                guard.fold_constants()
            }
            SqlStmt::Upsert { on_conflict, .. } => match on_conflict {
                OnConflict::DoNothing => Ok(()),
                OnConflict::DoUpdate { set: s, guard } => {
                    set(s)?;
                    guard.fold_constants()
                }
            },
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Col(c) => write!(f, "{c}"),
            Expr::Const(v) => write!(f, "{v}"),
            Expr::Excluded(c) => write!(f, "EXCLUDED.{c}"),
            Expr::Add(l, r) => write!(f, "({l} + {r})"),
            Expr::Sub(l, r) => write!(f, "({l} - {r})"),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => write!(f, "NULL"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
        }
    }
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cond::True => write!(f, "TRUE"),
            Cond::Cmp { left, op, right } => write!(f, "{left} {} {right}", op.as_sql()),
            Cond::And(all) => join(f, all, " AND "),
            Cond::Or(any) => join(f, any, " OR "),
        }
    }
}

fn join(f: &mut fmt::Formatter<'_>, conds: &[Cond], sep: &str) -> fmt::Result {
    write!(f, "(")?;
    for (i, c) in conds.iter().enumerate() {
        if i > 0 {
            write!(f, "{sep}")?;
        }
        write!(f, "{c}")?;
    }
    write!(f, ")")
}

fn write_insert(f: &mut fmt::Formatter<'_>, table: Table, key: &str, row: &Row) -> fmt::Result {
    write!(f, "INSERT INTO {table} (key")?;
    for c in row.keys() {
        write!(f, ", {c}")?;
    }
    write!(f, ") VALUES ('{key}'")?;
    for v in row.values() {
        write!(f, ", {v}")?;
    }
    write!(f, ")")
}

fn write_set(f: &mut fmt::Formatter<'_>, set: &[Assign]) -> fmt::Result {
    for (i, a) in set.iter().enumerate() {
        if i > 0 {
            write!(f, ", ")?;
        }
        match a {
            Assign::Set { column, value } => write!(f, "{column} = {value}")?,
            Assign::Add { column, delta } if *delta < 0 => {
                write!(f, "{column} = {column} - {}", delta.unsigned_abs())?
            }
            Assign::Add { column, delta } => write!(f, "{column} = {column} + {delta}")?,
            Assign::To { column, expr } => write!(f, "{column} = {expr}")?,
        }
    }
    Ok(())
}

impl fmt::Display for SqlStmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlStmt::Select {
                table,
                key,
                for_update,
            } => {
                write!(f, "SELECT * FROM {} WHERE key = '{key}'", table.as_str())?;
                if *for_update {
                    write!(f, " FOR UPDATE")?;
                }
                Ok(())
            }
            SqlStmt::Scan {
                table,
                filter,
                lock,
                limit,
            } => {
                write!(f, "SELECT * FROM {} WHERE {filter}", table.as_str())?;
                if let Some(n) = limit {
                    write!(f, " LIMIT {n}")?;
                }
                write!(f, "{}", lock.sql())
            }
            SqlStmt::Insert { table, key, row } => write_insert(f, *table, key, row),
            SqlStmt::Update {
                table,
                key,
                guard,
                set,
            } => {
                write!(f, "UPDATE {} SET ", table.as_str())?;
                write_set(f, set)?;
                write!(f, " WHERE key = '{key}'")?;
                if *guard != Cond::True {
                    write!(f, " AND {guard}")?;
                }
                Ok(())
            }
            SqlStmt::Delete { table, key, guard } => {
                write!(f, "DELETE FROM {table} WHERE key = '{key}'")?;
                if *guard != Cond::True {
                    write!(f, " AND {guard}")?;
                }
                Ok(())
            }
            SqlStmt::Upsert {
                table,
                key,
                row,
                on_conflict,
            } => {
                write_insert(f, *table, key, row)?;
                match on_conflict {
                    OnConflict::DoNothing => write!(f, " ON CONFLICT (key) DO NOTHING"),
                    OnConflict::DoUpdate { set, guard } => {
                        write!(f, " ON CONFLICT (key) DO UPDATE SET ")?;
                        write_set(f, set)?;
                        if *guard != Cond::True {
                            write!(f, " WHERE {guard}")?;
                        }
                        Ok(())
                    }
                }
            }
        }
    }
}

impl fmt::Display for SqlOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlOp::Begin => write!(f, "BEGIN"),
            SqlOp::Exec(stmt) => stmt.fmt(f),
            SqlOp::Commit => write!(f, "COMMIT"),
            SqlOp::Rollback => write!(f, "ROLLBACK"),
        }
    }
}

impl fmt::Display for SqlReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlReply::Ok => write!(f, "OK"),
            SqlReply::Rows(rows) if rows.is_empty() => write!(f, "0 rows"),
            SqlReply::Rows(rows) => {
                for (i, r) in rows.iter().enumerate() {
                    if i > 0 {
                        write!(f, "; ")?;
                    }
                    write!(f, "{{{}", r.key)?;
                    for (c, v) in &r.columns {
                        write!(f, " {c}={v}")?;
                    }
                    write!(f, "}}")?;
                }
                Ok(())
            }
            SqlReply::Affected(n) => write!(f, "{n} row(s)"),
            SqlReply::Committed => write!(f, "COMMITTED"),
            SqlReply::RolledBack => write!(f, "ROLLED BACK"),
            SqlReply::UniqueViolation { table, key } => {
                write!(f, "unique violation on {}.key = '{key}'", table.as_str())
            }
            SqlReply::Error(e) => write!(f, "error: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workorder::{UPDATE_LOG, WORK_ORDERS};

    static AB_DEF: TableDef = TableDef {
        name: "ab",
        columns: &[
            ("a", ColumnType::Int),
            ("b", ColumnType::Int),
            ("t", ColumnType::Text),
        ],
    };
    const AB: Table = Table::declare(&AB_DEF);

    fn holds(cond: &Cond, row: &Row) -> Result<bool, OutOfRange> {
        cond.eval(&RowRef {
            table: AB,
            key: "k",
            row,
            excluded: None,
        })
    }

    #[test]
    fn conditions_follow_sql_three_valued_logic_for_null() {
        let row = Row::from([
            ("a".to_string(), Value::Null),
            ("b".to_string(), Value::Int(3)),
        ]);
        assert_eq!(
            holds(&Cond::cmp("a", CmpOp::Eq, Value::Int(1)), &row),
            Ok(false)
        );
        assert_eq!(
            holds(&Cond::cmp("a", CmpOp::Ne, Value::Int(1)), &row),
            Ok(false)
        );
        assert_eq!(
            holds(&Cond::cmp("b", CmpOp::Lt, Value::Int(4)), &row),
            Ok(true)
        );
        let either = Cond::Or(vec![
            Cond::cmp("a", CmpOp::Eq, Value::Int(1)),
            Cond::cmp("b", CmpOp::Eq, Value::Int(3)),
        ]);
        assert_eq!(holds(&either, &row), Ok(true));
    }

    #[test]
    fn expressions_compute_bigint_arithmetic_with_null_and_overflow() {
        let row = Row::from([
            ("a".to_string(), Value::Null),
            ("b".to_string(), Value::Int(i64::MAX - 1)),
            ("t".to_string(), Value::Text("x".into())),
        ]);
        let at = RowRef {
            table: AB,
            key: "k",
            row: &row,
            excluded: None,
        };
        let b = || Expr::col("b");
        assert_eq!(b().plus(Expr::int(1)).eval(&at), Ok(Value::Int(i64::MAX)));
        assert_eq!(b().plus(Expr::int(2)).eval(&at), Err(OutOfRange));
        assert_eq!(Expr::col("a").plus(b()).eval(&at), Ok(Value::Null));
        assert_eq!(
            Expr::int(i64::MIN).minus(Expr::int(1)).fold_constants(),
            Err(OutOfRange)
        );
        assert_eq!(b().minus(b()).eval(&at), Ok(Value::Int(0)));
        // `b + 1 <= b`: false; with NULL: unknown (false); overflow: an error.
        let le = |l: Expr, r: Expr| Cond::compare(l, CmpOp::Le, r);
        assert_eq!(holds(&le(b().plus(Expr::int(1)), b()), &row), Ok(false));
        assert_eq!(
            holds(&le(Expr::col("a").plus(Expr::int(1)), b()), &row),
            Ok(false)
        );
        assert_eq!(holds(&le(b().plus(b()), b()), &row), Err(OutOfRange));
        // Across types or against a NULL constant: false without computing anything.
        assert_eq!(holds(&le(b().plus(b()), Expr::col("t")), &row), Ok(false));
        assert_eq!(
            holds(&le(b().plus(b()), Expr::Const(Value::Null)), &row),
            Ok(false)
        );
        // AND stops at its first false side.
        let and = Cond::And(vec![
            Cond::cmp("b", CmpOp::Eq, Value::Int(0)),
            le(b().plus(b()), b()),
        ]);
        assert_eq!(holds(&and, &row), Ok(false));
    }

    #[test]
    fn a_where_clause_runs_its_cheapest_conjuncts_first_and_folds_constant_false_ones() {
        let row = Row::from([
            ("b".to_string(), Value::Int(i64::MAX)),
            ("t".to_string(), Value::Text("x".into())),
        ]);
        let at = RowRef {
            table: AB,
            key: "k",
            row: &row,
            excluded: None,
        };
        let overflow = Cond::compare(Expr::col("b").plus(Expr::int(1)), CmpOp::Eq, Expr::col("a"));
        let t_is_y = Cond::cmp("t", CmpOp::Eq, Value::Text("y".into()));
        let written_first = Cond::And(vec![overflow.clone(), t_is_y.clone()]);
        assert_eq!(written_first.eval(&at), Err(OutOfRange));
        assert_eq!(written_first.eval_where(&at), Ok(false));
        // Nested ANDs are flattened; TRUE is left out.
        let nested = Cond::And(vec![overflow.clone(), Cond::And(vec![Cond::True, t_is_y])]);
        assert_eq!(nested.eval_where(&at), Ok(false));
        // A conjunct false whatever the row folds the clause, however costly the others.
        let with_null = Cond::And(vec![
            overflow.clone(),
            Cond::cmp("b", CmpOp::Eq, Value::Null),
        ]);
        assert_eq!(with_null.eval_where(&at), Ok(false));
        // Alone, or under OR, the overflow is computed, unless the OR holds a TRUE.
        assert_eq!(overflow.eval_where(&at), Err(OutOfRange));
        let either = Cond::Or(vec![
            overflow.clone(),
            Cond::cmp("b", CmpOp::Eq, Value::Int(1)),
        ]);
        assert_eq!(either.eval_where(&at), Err(OutOfRange));
        let or_true = Cond::Or(vec![overflow.clone(), Cond::True]);
        assert_eq!(or_true.eval_folded(&at), Ok(true));
        // Folding alone keeps the written order.
        let and = Cond::And(vec![
            overflow,
            Cond::cmp("t", CmpOp::Eq, Value::Text("y".into())),
        ]);
        assert_eq!(and.eval_folded(&at), Err(OutOfRange));
        // Among conjuncts of one cost, equalities run last (PostgreSQL 15 answers 22003 to
        // `b + 0 = a AND b + 2 <> a` and no row to `b + 0 < a AND b + 2 <> a`).
        let row = Row::from([
            ("a".to_string(), Value::Int(5)),
            ("b".to_string(), Value::Int(i64::MAX - 1)),
        ]);
        let at = RowRef {
            table: AB,
            key: "k",
            row: &row,
            excluded: None,
        };
        let b0 = || Expr::col("b").plus(Expr::int(0));
        let b2_ne_a = Cond::compare(Expr::col("b").plus(Expr::int(2)), CmpOp::Ne, Expr::col("a"));
        let eq_first = Cond::And(vec![
            Cond::compare(b0(), CmpOp::Eq, Expr::col("a")),
            b2_ne_a.clone(),
        ]);
        assert_eq!(eq_first.eval(&at), Ok(false));
        assert_eq!(eq_first.eval_where(&at), Err(OutOfRange));
        let lt_first = Cond::And(vec![
            Cond::compare(b0(), CmpOp::Lt, Expr::col("a")),
            b2_ne_a,
        ]);
        assert_eq!(lt_first.eval_where(&at), Ok(false));
        // By key, a conjunct the key's equality proves is left out (PostgreSQL 15 answers the
        // row to `key = 'k' AND (b + 2 = a OR key = 'k')`, and 22003 with 'j' in the OR).
        let b2_eq_a =
            || Cond::compare(Expr::col("b").plus(Expr::int(2)), CmpOp::Eq, Expr::col("a"));
        let or_key = |k: &str| {
            Cond::Or(vec![
                b2_eq_a(),
                Cond::cmp("key", CmpOp::Eq, Value::Text(k.into())),
            ])
        };
        assert_eq!(or_key("k").eval_where(&at), Err(OutOfRange));
        assert_eq!(or_key("k").eval_where_by_key(&at), Ok(true));
        assert_eq!(or_key("j").eval_where_by_key(&at), Err(OutOfRange));
        let both = Cond::And(vec![b2_eq_a(), or_key("k")]);
        assert_eq!(both.eval_where_by_key(&at), Err(OutOfRange));
    }

    #[test]
    fn filter_where_is_eval_where_on_each_row_until_the_first_overflow() {
        let rows: Vec<(String, Row)> = [
            ("j", 1, "x"),
            ("k", i64::MAX, "y"),
            ("l", 3, "y"),
            ("m", i64::MAX, "x"),
        ]
        .into_iter()
        .map(|(k, b, t)| {
            let row = Row::from([
                ("b".to_string(), Value::Int(b)),
                ("t".to_string(), Value::Text(t.into())),
            ]);
            (k.to_string(), row)
        })
        .collect();
        let rows: Vec<(&str, &Row)> = rows.iter().map(|(k, r)| (k.as_str(), r)).collect();
        let b_plus_1_gt_2 =
            Cond::compare(Expr::col("b").plus(Expr::int(1)), CmpOp::Gt, Expr::int(2));
        let t_is = |t: &str| Cond::cmp("t", CmpOp::Eq, Value::Text(t.into()));
        let conds = [
            Cond::True,
            t_is("y"),
            Cond::And(vec![b_plus_1_gt_2.clone(), t_is("x")]),
            Cond::And(vec![b_plus_1_gt_2.clone(), t_is("y")]),
            Cond::Or(vec![
                t_is("x"),
                Cond::cmp("key", CmpOp::Eq, Value::Text("l".into())),
            ]),
            Cond::And(vec![Cond::cmp("b", CmpOp::Eq, Value::Null), b_plus_1_gt_2]),
        ];
        for cond in &conds {
            // Row by row, as a scan computed it before it planned the clause once.
            let mut expected = Ok(Vec::new());
            for &(key, row) in &rows {
                let at = RowRef {
                    table: AB,
                    key,
                    row,
                    excluded: None,
                };
                match cond.eval_where(&at) {
                    Ok(true) => expected.as_mut().unwrap().push(key),
                    Ok(false) => {}
                    Err(e) => {
                        expected = Err(e);
                        break;
                    }
                }
            }
            let got = cond
                .filter_where(AB, rows.iter().copied())
                .map(|passing| passing.into_iter().map(|(k, _)| k).collect::<Vec<_>>());
            assert_eq!(got, expected, "{cond:?}");
        }
        let passing = |cond: &Cond| {
            cond.filter_where(AB, rows.iter().copied())
                .map(|p| p.into_iter().map(|(k, _)| k).collect::<Vec<_>>())
        };
        assert_eq!(passing(&conds[1]), Ok(vec!["k", "l"]));
        assert_eq!(passing(&conds[2]), Err(OutOfRange));
        assert_eq!(passing(&conds[4]), Ok(vec!["j", "l", "m"]));
        assert_eq!(passing(&conds[5]), Ok(vec![]));
    }

    fn insert(row: &[(&str, Value)]) -> SqlStmt {
        SqlStmt::Insert {
            table: WORK_ORDERS,
            key: "w".into(),
            row: row
                .iter()
                .map(|(c, v)| (c.to_string(), v.clone()))
                .collect(),
        }
    }

    fn update(guard: Cond, set: Vec<Assign>) -> SqlStmt {
        SqlStmt::Update {
            table: WORK_ORDERS,
            key: "w".into(),
            guard,
            set,
        }
    }

    fn add(column: &str) -> Assign {
        Assign::Add {
            column: column.into(),
            delta: 1,
        }
    }

    fn set(column: &str, value: Value) -> Assign {
        Assign::Set {
            column: column.into(),
            value,
        }
    }

    /// The SQLSTATE and text a statement is refused with.
    fn refusal(stmt: &SqlStmt) -> (&'static str, String) {
        match stmt.validate() {
            Err(e) => (e.sqlstate(), e.to_string()),
            Ok(()) => ("", format!("`{stmt}` was accepted")),
        }
    }

    #[test]
    fn each_rule_refuses_its_known_bad_statement() {
        let cases: Vec<(SqlStmt, &str, &str)> = vec![
            (
                SqlStmt::scan(
                    WORK_ORDERS,
                    Cond::And(vec![Cond::True, Cond::cmp("x", CmpOp::Eq, Value::Int(1))]),
                ),
                "42703",
                "42703: column \"x\" does not exist",
            ),
            (
                insert(&[("x", Value::Int(1))]),
                "42703",
                "42703: column \"x\" of relation \"work_orders\" does not exist",
            ),
            (
                insert(&[("key", Value::Text("w".into()))]),
                "42701",
                "42701: column \"key\" specified more than once",
            ),
            (
                insert(&[("qty", Value::Text("1".into()))]),
                "42804",
                "42804: column \"qty\" is of type bigint but expression is of type text",
            ),
            (
                update(Cond::True, vec![set("lease_owner", Value::Int(1))]),
                "42804",
                "42804: column \"lease_owner\" is of type text but expression is of type bigint",
            ),
            (
                update(Cond::True, vec![set("x", Value::Int(1))]),
                "42703",
                "42703: column \"x\" of relation \"work_orders\" does not exist",
            ),
            (
                update(Cond::cmp("x", CmpOp::Eq, Value::Int(1)), vec![]),
                "42703",
                "42703: column \"x\" does not exist",
            ),
            (
                update(Cond::True, vec![add("lease_owner")]),
                "42883",
                "42883: operator does not exist: text + bigint",
            ),
            (
                update(Cond::True, vec![set("key", Value::Text("v".into()))]),
                "0A000",
                "0A000: racelab does not support updating the primary key \"key\" of relation \
                 \"work_orders\"",
            ),
            (
                update(Cond::True, vec![add("qty"), set("qty", Value::Int(1))]),
                "42601",
                "42601: multiple assignments to same column \"qty\"",
            ),
        ];
        for (stmt, sqlstate, text) in cases {
            assert_eq!(refusal(&stmt), (sqlstate, text.to_string()), "`{stmt}`");
            assert_eq!(
                stmt.validate().map_err(|e| e.reply()),
                Err(SqlReply::Error(text.to_string()))
            );
        }
    }

    #[test]
    fn the_first_problem_in_analysis_order_is_the_answer() {
        // INSERT: every name before any type, whatever the row's order.
        let names_first = insert(&[("lease_owner", Value::Int(1)), ("x", Value::Int(1))]);
        assert_eq!(refusal(&names_first).0, "42703");
        let key_first = insert(&[("key", Value::Int(1)), ("x", Value::Int(1))]);
        assert_eq!(refusal(&key_first).0, "42701");
        // UPDATE: the guard before the assignments.
        let guard_first = update(
            Cond::cmp("x", CmpOp::Eq, Value::Int(1)),
            vec![set("key", Value::Text("v".into()))],
        );
        assert_eq!(
            refusal(&guard_first).1,
            "42703: column \"x\" does not exist"
        );
        // Each assignment in order, its type before the repetition.
        let type_before_repeat = update(Cond::True, vec![add("lease_owner"), add("lease_owner")]);
        assert_eq!(refusal(&type_before_repeat).0, "42883");
        let in_order = update(
            Cond::True,
            vec![add("qty"), add("qty"), set("key", Value::Null)],
        );
        assert_eq!(refusal(&in_order).0, "42601");
    }

    #[test]
    fn valid_statements_pass() {
        let valid = [
            SqlStmt::Select {
                table: WORK_ORDERS,
                key: "any'key".into(),
                for_update: true,
            },
            SqlStmt::scan(
                UPDATE_LOG,
                Cond::Or(vec![
                    Cond::cmp("key", CmpOp::Eq, Value::Text("k".into())),
                    Cond::cmp("status", CmpOp::Eq, Value::Int(1)),
                ]),
            ),
            insert(&[
                ("qty", Value::Null),
                ("lease_owner", Value::Text("A".into())),
            ]),
            update(
                Cond::cmp("lease_epoch", CmpOp::Eq, Value::Int(1)),
                vec![
                    add("qty"),
                    add("lease_epoch"),
                    set("lease_until", Value::Null),
                ],
            ),
            update(Cond::True, vec![]),
        ];
        for stmt in valid {
            assert_eq!(stmt.validate(), Ok(()), "`{stmt}`");
        }
    }

    #[test]
    fn a_table_travels_with_its_declaration_and_compares_by_name() {
        let json = serde_json::to_string(&WORK_ORDERS).unwrap();
        assert!(json.contains("\"work_orders\"") && json.contains("lease_owner"));
        let back: Table = serde_json::from_str(&json).unwrap();
        assert_eq!(back, WORK_ORDERS);
        assert_eq!(back.columns(), WORK_ORDERS.columns());
        let again: Table = serde_json::from_str(&json).unwrap();
        assert!(std::ptr::eq(back.def(), again.def()), "interned once");
        assert_eq!(
            format!("{WORK_ORDERS:?} {UPDATE_LOG}"),
            "work_orders update_log"
        );
        assert!(UPDATE_LOG < WORK_ORDERS);
        for bad in [
            r#"{"name":"x y","columns":[]}"#,
            r#"{"name":"t","columns":[["key","Text"]]}"#,
            r#"{"name":"t","columns":[["a","Int"],["a","Text"]]}"#,
        ] {
            assert!(serde_json::from_str::<Table>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_values_render_with_sql_quoting() {
        assert_eq!(Value::Text("it's".into()).to_string(), "'it''s'");
    }
}
