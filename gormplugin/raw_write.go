package gormplugin

import (
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"
)

// Raw SQL: db.Exec runs text the plugin did not build. It names the tables
// it writes with the scanner in tags.go and invalidates their list and
// table tags, with the cascades of the tables whose models it has seen;
// SQL it cannot read invalidates every table seen. Inside a transaction the
// plugin owns, a raw write marks the transaction as written, so that reads
// after it bypass the cache as they do after a GORM write.

// beforeRaw refuses a raw write inside a foreign transaction under
// WithForeignTxError, as it refuses GORM's writes.
func (p *Plugin) beforeRaw(db *gorm.DB) {
	if db.Error != nil || db.DryRun {
		return
	}
	if _, write := p.rawWriteTags(db.Statement.SQL.String()); !write {
		return
	}
	if p.refuseClosed(db) || !p.cfg.foreignError {
		return
	}
	if state, _ := txOf(db); state == foreignTx {
		db.AddError(ErrForeignTransaction)
	}
}

// afterRaw invalidates what a raw Exec wrote.
func (p *Plugin) afterRaw(db *gorm.DB) {
	if db.DryRun || refusedBefore(db) {
		return // nothing ran (ToSQL and DryRun sessions build SQL only)
	}
	tags, write := p.rawWriteTags(db.Statement.SQL.String())
	if !write {
		return
	}
	if state, tx := txOf(db); state == ownTx {
		tx.written.Store(true)
	}
	p.dispatch(db, tags)
}

// runRawWrite runs raw SQL that came through GORM's query or row chain
// (Raw("UPDATE … RETURNING").Find, Scan, Rows) when it writes: never from
// the cache, and invalidating as Exec does. It reports false, running
// nothing, for a read.
func (p *Plugin) runRawWrite(db *gorm.DB, run func(*gorm.DB)) bool {
	if !isRawWrite(tokenize(db.Statement.SQL.String())) {
		return false
	}
	p.beforeRaw(db)
	run(db) // GORM's own query or row callback; it runs nothing after an error
	p.afterRaw(db)
	return true
}

// isRawWrite reports SQL that changes data, for statements that came as
// queries: a DML verb first, a data-modifying WITH, or a procedure call.
func isRawWrite(toks []string) bool {
	if len(toks) == 0 {
		return false
	}
	switch strings.ToUpper(toks[0]) {
	case "INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE", "UPSERT", "CALL", "TRUNCATE":
		return true
	case "WITH":
		for i, t := range toks {
			switch strings.ToUpper(t) {
			case "INSERT", "DELETE", "MERGE":
				return true
			case "UPDATE":
				if i == 0 || !strings.EqualFold(toks[i-1], "for") {
					return true
				}
			}
		}
	}
	return false
}

// rawWriteTags returns the tags raw SQL invalidates, and whether it writes
// at all.
func (p *Plugin) rawWriteTags(sqlText string) ([]string, bool) {
	toks := tokenize(sqlText)
	if len(toks) == 0 {
		return nil, false
	}
	switch verb := strings.ToUpper(toks[0]); verb {
	case "SELECT", "SAVEPOINT", "RELEASE", "SET", "SHOW", "EXPLAIN", "PRAGMA", "DESCRIBE", "VALUES":
		return nil, false
	case "ROLLBACK", "BEGIN", "COMMIT", "START", "END", "ABORT":
		if verb == "ROLLBACK" && containsWord(toks, "to") {
			return nil, false
		}
		p.logOnce("raw-tx", "gormplugin: transactions opened or ended with Exec are invisible to the plugin; use db.Transaction or db.Begin", "sql", sqlText)
		return nil, false
	case "CREATE":
		if containsWord(toks, "replace") { // CREATE OR REPLACE VIEW v: reads of v change
			if name, ok := ddlTable(toks); ok {
				return p.tableTags(name), true
			}
			return p.everyTable(sqlText), true
		}
		return nil, false // no cached read can depend on a table or index not there yet
	case "COMMENT", "ANALYZE", "VACUUM", "GRANT", "REVOKE":
		return nil, false
	case "DROP", "ALTER", "TRUNCATE", "RENAME", "REFRESH":
		if verb == "TRUNCATE" && containsWord(toks, "cascade") {
			// Empties every table that references it, whatever their ON
			// DELETE: more than the cascades the plugin follows.
			return p.everyTable(sqlText), true
		}
		if t, ok := ddlTable(toks); ok {
			return p.tableTags(t), true
		}
		return p.everyTable(sqlText), true
	}
	tables, err := sqlTables(sqlText)
	if err != nil || len(tables) == 0 {
		return p.everyTable(sqlText), true
	}
	cascades := !strings.EqualFold(toks[0], "insert") ||
		containsWord(toks, "conflict") || containsWord(toks, "duplicate") || containsWord(toks, "replace")
	var tags []string
	for _, t := range tables {
		tags = append(tags, p.tableTags(t)...)
		if cascades {
			tags = append(tags, p.rawCascades(t)...)
		}
	}
	return tags, true
}

// tableTags returns the list and table tags of a table named in raw SQL,
// and of every table of a seen model spelled the same but for case (SQLite
// and MySQL on case-insensitive file systems do not tell them apart).
func (p *Plugin) tableTags(table string) []string {
	tags := []string{ListTag(table), TableTag(table)}
	p.schemas.Range(func(_, v any) bool {
		if seen := v.(string); seen != table && strings.EqualFold(seen, table) {
			tags = append(tags, ListTag(seen), TableTag(seen))
		}
		return true
	})
	return dedupe(tags)
}

// rawCascades returns what a raw write to table may change through foreign
// keys: the rows it deletes (DELETE, REPLACE), and the columns it updates,
// which raw SQL does not tell the plugin (so every column).
func (p *Plugin) rawCascades(table string) []string {
	var tags []string
	p.schemas.Range(func(k, v any) bool {
		if strings.EqualFold(v.(string), table) {
			s := k.(*schema.Schema)
			tags = append(tags, p.deleteCascades(s)...)
			tags = append(tags, p.updateCascades(s, nil)...)
		}
		return true
	})
	return tags
}

func containsWord(toks []string, word string) bool {
	for _, t := range toks {
		if strings.EqualFold(t, word) {
			return true
		}
	}
	return false
}

// ddlTable finds the table or view of DDL — DROP/ALTER/TRUNCATE/CREATE OR
// REPLACE/REFRESH [MATERIALIZED] TABLE|VIEW [IF EXISTS] [CONCURRENTLY]
// name, or TRUNCATE name — which cached reads may have read. False for
// anything else (an index, a sequence: the caller invalidates every table).
func ddlTable(toks []string) (string, bool) {
	i := 1
	for i < len(toks) {
		switch strings.ToLower(toks[i]) {
		case "or", "replace", "materialized", "temporary", "temp", "global", "local", "unlogged":
			i++
			continue
		}
		break
	}
	if i < len(toks) && (strings.EqualFold(toks[i], "table") || strings.EqualFold(toks[i], "view")) {
		i++
	} else if !strings.EqualFold(toks[0], "truncate") {
		return "", false
	}
	for i < len(toks) {
		switch strings.ToLower(toks[i]) {
		case "if", "not", "exists", "only", "concurrently":
			i++
			continue
		}
		break
	}
	if i < len(toks) && isIdent(toks[i]) {
		return tableName(toks[i]), true
	}
	return "", false
}
