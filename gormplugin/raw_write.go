package gormplugin

import (
	"strings"

	"gorm.io/gorm"
)

// afterRaw invalidates what a raw Exec wrote.
func (p *Plugin) afterRaw(db *gorm.DB) {
	sqlText := strings.TrimSpace(db.Statement.SQL.String())
	verb := strings.ToUpper(firstWord(sqlText))
	switch verb {
	case "SELECT", "SAVEPOINT", "RELEASE", "SET", "SHOW", "EXPLAIN", "PRAGMA", "":
		return
	case "ROLLBACK":
		if strings.Contains(strings.ToUpper(sqlText), " TO ") {
			return
		}
		fallthrough
	case "BEGIN", "COMMIT", "START", "END":
		p.logOnce("raw-tx", "gormplugin: transactions opened or ended with Exec are invisible to the plugin; use db.Transaction or db.Begin", "sql", sqlText)
		return
	case "CREATE", "COMMENT", "ANALYZE", "VACUUM", "GRANT", "REVOKE":
		return // no cached read can depend on a table or index not there yet
	case "DROP", "ALTER", "TRUNCATE", "RENAME":
		if t, ok := ddlTable(sqlText); ok {
			p.dispatch(db, []string{ListTag(t), TableTag(t)})
			return
		}
		p.dispatch(db, p.everyTable(sqlText))
		return
	}
	tables, err := sqlTables(sqlText)
	if err != nil || len(tables) == 0 {
		p.dispatch(db, p.everyTable(sqlText))
		return
	}
	var tags []string
	for _, t := range tables {
		tags = append(tags, ListTag(t), TableTag(t))
	}
	p.dispatch(db, tags)
}

func firstWord(s string) string {
	if i := strings.IndexAny(s, " \t\n("); i >= 0 {
		return s[:i]
	}
	return s
}

// ddlTable finds the table of DROP/ALTER/TRUNCATE [TABLE] [IF EXISTS] name;
// DDL on anything else (an index, a view) is not a table.
func ddlTable(sqlText string) (string, bool) {
	toks := tokenize(sqlText)
	i := 1
	if i < len(toks) && strings.EqualFold(toks[i], "table") {
		i++
	} else if !strings.EqualFold(toks[0], "truncate") {
		return "", false
	}
	for i < len(toks) && (strings.EqualFold(toks[i], "if") || strings.EqualFold(toks[i], "exists") || strings.EqualFold(toks[i], "only")) {
		i++
	}
	if i < len(toks) && isIdent(toks[i]) {
		return tableName(toks[i]), true
	}
	return "", false
}
