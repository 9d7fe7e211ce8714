package pgcdc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
)

// stream is one replication session, on two goroutines. The reader (the
// session's) reads messages, gathers each transaction's tags until its
// commit and queues them, in commit order, with the position the commit
// ends at; keepalives between transactions queue a bare position. The
// invalidator takes what is queued — every transaction waiting, up to
// maxBatch, in one call — invalidates the union of their tags, retrying
// until it succeeds, and only then advances Processed to the last position
// taken. The reader confirms Processed to the server. So a position is
// never confirmed before the invalidations of every commit before it
// returned, and under load a Redis round trip serves many commits.
type stream struct {
	l           *Listener
	repl, plain *pgconn.PgConn // the reader's
	vis         *pgconn.PgConn // the invalidator's
	rels        map[uint32]*relation

	inTx    bool
	xid     uint32 // of the transaction being read
	tags    []string
	seen    map[string]bool
	entered []string       // tables whose rows the transaction inserted or updated
	rowTags map[string]int // row tags the transaction added, by table
	// changeTags counts the tags WithChangeTags added to the transaction;
	// past maxChangeTags it is -1 and the transaction owes a Clear.
	changeTags int
	queued     LSN // last position queued

	work chan batch
	dead chan struct{} // closed when the invalidator has stopped
	err  error         // why, once dead is closed

	wakeMu sync.Mutex
	wake   context.CancelFunc // ends the reader's current wait

	confirmed  LSN // last position sent to the server
	nextStatus time.Time
	askedAt    time.Time // when a status asked for a reply that has not come; zero if none is awaited

	serverEnd atomic.Uint64 // the server's WAL end, as last reported
	// The invalidator's: a Clear is owed, and when to try it next.
	debt         bool
	clearWait    time.Duration
	nextClear    time.Time
	owed         map[string]bool
	owedOverflow bool
}

// batch is a committed transaction's tags (none for a bare position).
type batch struct {
	lsn        LSN
	commitTime time.Time
	xid        uint32
	tags       []string
	entered    []string // tables rows were inserted into or updated in
	// clear: the transaction's WithChangeTags tags were more than
	// maxChangeTags; a Clear of the prefix stands for them.
	clear bool
}

// maxBatch bounds the transactions invalidated in one call.
const maxBatch = 256

// maxRowTags bounds the row tags a transaction invalidates for one table:
// past it the table tag, which every read of the table depends on, stands
// for the rest, so that a statement writing millions of rows costs neither
// millions of tags in memory nor an invalidation call that large.
const maxRowTags = 10_000

// maxChangeTags bounds the tags of WithChangeTags one transaction
// gathers. Nothing coarser is known to stand for a function's tags, as
// the table tag stands for row tags: past the bound the transaction owes a
// Clear of the prefix (durably, as past WithMaxRetainedWAL), and the
// function is no longer called for its rows.
var maxChangeTags = 100_000 // a variable for the tests

// maxBatchTags bounds the tags the invalidator gathers from several
// transactions into one call (one transaction may exceed it alone).
const maxBatchTags = 100_000

func (s *stream) run(ctx context.Context) error {
	s.work = make(chan batch, maxBatch)
	s.dead = make(chan struct{})
	ictx, stopInvalidator := context.WithCancel(ctx)
	go func() {
		s.err = s.invalidator(ictx)
		close(s.dead)
		s.poke() // the reader ends the session too
	}()
	err := s.read(ctx)
	stopInvalidator()
	<-s.dead
	// A stop confirms what is done, so that the next session does not
	// replay it (a failure here costs only that replay).
	if s.l.Processed() > s.confirmed {
		s.sendStatus(false)
	}
	if s.err != nil && !errors.Is(s.err, context.Canceled) {
		return s.err
	}
	return err
}

func (s *stream) read(ctx context.Context) error {
	s.nextStatus = time.Now().Add(s.l.cfg.status)
	for {
		rctx, cancel := context.WithDeadline(ctx, s.nextStatus)
		s.setWake(cancel)
		// After setWake: an advance or the invalidator's end from here on
		// cancels rctx, one before it is seen here.
		select {
		case <-s.dead:
			cancel()
			return s.err
		default:
		}
		if p, due := s.l.Processed(), !time.Now().Before(s.nextStatus); p > s.confirmed || due {
			// The periodic status asks for a reply: silence after it
			// tells a dead connection (below).
			if err := s.sendStatus(due && s.askedAt.IsZero()); err != nil {
				cancel()
				return err
			}
		}
		msg, err := s.repl.ReceiveMessage(rctx)
		woke := rctx.Err() != nil // before cancel(), which sets it
		s.setWake(nil)
		cancel()
		if err == nil {
			s.askedAt = time.Time{}
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// A wake-up leaves the connection open; an error that closed
			// it (the server ended the session) ends the session, also if
			// a wake-up came at the same moment.
			if (woke || pgconn.Timeout(err)) && !s.repl.IsClosed() {
				// A connection that went silent without closing (a
				// partition, a host gone: the server ended its side at
				// wal_sender_timeout) shows nothing to TCP for many
				// minutes; the server answers a reply request at once.
				if silent := time.Since(s.askedAt); !s.askedAt.IsZero() && silent > s.silenceBound() {
					return fmt.Errorf("pgcdc: receive: no answer from the server %v after a status that asked for one; the connection is taken for lost", silent.Round(time.Millisecond))
				}
				// A status is due, or Processed moved. A manager closed
				// meanwhile ends the session now, not at the next change.
				if err := s.l.managerErr(); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("pgcdc: receive: %w", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if err := s.copyData(ctx, msg.Data); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			pgErr := pgconn.ErrorResponseToPgError(msg)
			if pgErr.Code == "42704" && strings.Contains(pgErr.Message, "publication") {
				// Decoding reads the publication as the catalogue was at
				// each change: one dropped (even if created again since)
				// fails at the same change on every reconnection.
				return fmt.Errorf("%w: publication %s is missing at position %s of slot %s (it was dropped while the slot had changes to decode): PostgreSQL cannot decode past it, and the changes since are lost to the listener; drop the slot (SELECT pg_drop_replication_slot('%s')), clear the cache prefix, and start again: %w",
					ErrPublication, s.l.cfg.publication, s.l.Processed(), s.l.cfg.slot, s.l.cfg.slot, pgErr)
			}
			return fmt.Errorf("pgcdc: replication stream: %w", pgErr)
		case *pgproto3.CopyDone:
			return errors.New("pgcdc: the server ended the replication stream")
		}
	}
}

func (s *stream) setWake(fn context.CancelFunc) {
	s.wakeMu.Lock()
	s.wake = fn
	s.wakeMu.Unlock()
}

// poke ends the reader's wait so that it confirms the new position now.
func (s *stream) poke() {
	s.wakeMu.Lock()
	if s.wake != nil {
		s.wake()
	}
	s.wakeMu.Unlock()
}

// silenceBound is how long the reader waits, in ReceiveMessage, for the
// reply a status asked for before it takes the connection for lost: twice
// the status interval, at least 2 s, so that a loaded server or machine
// does not cost reconnections.
func (s *stream) silenceBound() time.Duration { return max(2*s.l.cfg.status, 2*time.Second) }

// enqueue hands b to the invalidator. While the queue is full (the backend
// is slow or down) it keeps the session alive with status messages, which
// confirm nothing new.
func (s *stream) enqueue(ctx context.Context, b batch) error {
	for {
		t := time.NewTimer(time.Until(s.nextStatus))
		select {
		case s.work <- b:
			t.Stop()
			s.queued = b.lsn
			return nil
		case <-s.dead:
			t.Stop()
			return s.err
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
			if err := s.sendStatus(false); err != nil {
				return err
			}
		}
	}
}

// invalidator runs until ctx ends or the manager is closed.
func (s *stream) invalidator(ctx context.Context) error {
	group := make([]batch, 0, maxBatch)
	for {
		group = group[:0]
		var retryClear <-chan time.Time
		var clearTimer *time.Timer
		if s.debt {
			clearTimer = time.NewTimer(time.Until(s.nextClear))
			retryClear = clearTimer.C
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-retryClear:
			if err := s.settleDebt(ctx); err != nil {
				return err
			}
			continue
		case b := <-s.work:
			group = append(group, b)
		}
		if clearTimer != nil {
			clearTimer.Stop()
		}
		ntags := len(group[0].tags)
	drain:
		for len(group) < maxBatch && ntags < maxBatchTags {
			select {
			case b := <-s.work:
				group = append(group, b)
				ntags += len(b.tags)
			default:
				break drain
			}
		}
		var tags []string
		seen := map[string]bool{}
		for _, b := range group {
			for _, t := range b.tags {
				if !seen[t] {
					seen[t] = true
					tags = append(tags, t)
				}
			}
		}
		last := group[len(group)-1].lsn
		overflow := slices.IndexFunc(group, func(b batch) bool { return b.clear })
		switch {
		case s.debt || overflow >= 0:
			// A Clear is owed, durably: it covers these commits too, once
			// they are visible.
			if err := s.waitVisible(ctx, group); err != nil {
				return err
			}
			if !s.debt {
				why := fmt.Sprintf("WithChangeTags gave a transaction more than %d tags", maxChangeTags)
				if err := s.incurDebt(ctx, group[overflow].lsn, why); err != nil {
					return err
				}
			}
			s.owe(tags)
			if !time.Now().Before(s.nextClear) {
				if err := s.settleDebt(ctx); err != nil {
					return err
				}
			}
		case len(tags) > 0:
			if err := s.waitVisible(ctx, group); err != nil {
				return err
			}
			// After waitVisible: see schemeTags.
			byTable := s.schemeTags(ctx, group)
			for _, b := range group {
				for _, table := range b.entered {
					for _, t := range byTable[table] {
						if !seen[t] {
							seen[t] = true
							tags = append(tags, t)
						}
					}
				}
			}
			covered, err := s.invalidate(ctx, tags, last)
			if err != nil {
				return err
			}
			if !covered {
				for _, b := range group {
					if len(b.tags) > 0 {
						bt := b.tags
						for _, table := range b.entered {
							bt = append(slices.Clip(bt), byTable[table]...)
						}
						s.l.emit(Event{Kind: EventInvalidated, LSN: b.lsn, CommitTime: b.commitTime, Tags: bt})
					}
				}
			}
		}
		s.l.advance(last)
		s.poke()
	}
}

// overBound reports whether the WAL the slot holds past Processed has
// grown beyond WithMaxRetainedWAL.
func (s *stream) overBound() bool {
	b := s.l.cfg.maxRetained
	if b <= 0 {
		return false
	}
	end, p := LSN(s.serverEnd.Load()), s.l.Processed()
	return end > p && uint64(end-p) > uint64(b)
}

// incurDebt records durably, in PostgreSQL, that the manager's prefix must
// be cleared: from then on commits are confirmed without their own
// invalidations, which the Clear replaces, and the slot lets their WAL go.
func (s *stream) incurDebt(ctx context.Context, lsn LSN, why string) error {
	t := quoteIdent(s.l.cfg.debtTable)
	if _, err := s.vis.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+t+" (slot text PRIMARY KEY, since timestamptz NOT NULL DEFAULT now())").ReadAll(); err != nil {
		return fmt.Errorf("pgcdc: create %s: %w", s.l.cfg.debtTable, err)
	}
	if _, err := query(ctx, s.vis, "INSERT INTO "+t+" (slot) VALUES ($1) ON CONFLICT DO NOTHING", s.l.cfg.slot); err != nil {
		return err
	}
	s.debt = true
	s.l.holdForDebt(true)
	s.clearWait = s.l.cfg.minBackoff
	s.nextClear = time.Now().Add(s.clearWait)
	if why != "" {
		s.nextClear = time.Now() // nothing failed: clear at once
		s.l.log.Error("pgcdc: "+why+"; the cache prefix will be cleared instead", "prefix", s.l.m.Prefix(), "lsn", lsn)
		return nil
	}
	s.l.log.Error("pgcdc: the slot holds more WAL than WithMaxRetainedWAL allows while invalidations fail; the cache prefix will be cleared instead",
		"prefix", s.l.m.Prefix(), "lsn", lsn, "bound", s.l.cfg.maxRetained)
	s.l.emit(Event{Kind: EventOverBound, LSN: lsn})
	return nil
}

// maxOwed bounds the tags kept to invalidate with an owed Clear.
const maxOwed = 100_000

// owe keeps the tags of commits confirmed under a debt. The Clear removes
// every entry but does not advance the tags' epochs: a fill that read the
// old rows before those commits and stores after the Clear would pass the
// fill guard. Invalidating the tags too (before the Clear) rejects it.
// Past maxOwed, and after a restart, only the Clear is left; such a fill
// is then refused only once older than the backend's longest allowed fill.
func (s *stream) owe(tags []string) {
	if s.owedOverflow {
		return
	}
	if s.owed == nil {
		s.owed = map[string]bool{}
	}
	for _, t := range tags {
		s.owed[t] = true
	}
	if len(s.owed) > maxOwed {
		s.owed, s.owedOverflow = nil, true
	}
}

// settleDebt tries the Clear a debt owes, after invalidating the tags it
// kept; on success the debt is gone. A failure is no error: the debt stays
// and is tried again.
func (s *stream) settleDebt(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, s.l.cfg.invTimeout)
	var err error
	if len(s.owed) > 0 {
		owed := make([]string, 0, len(s.owed))
		for t := range s.owed {
			owed = append(owed, t)
		}
		_, err = s.l.m.InvalidateDependency(cctx, owed...)
	}
	if err == nil {
		_, err = s.l.m.Clear(cctx)
	}
	cancel()
	if errors.Is(err, depcache.ErrClosed) {
		return fmt.Errorf("pgcdc: %w", err)
	}
	if err != nil {
		s.clearWait = min(2*s.clearWait, s.l.cfg.maxBackoff)
		s.nextClear = time.Now().Add(s.clearWait)
		return nil
	}
	if _, err := query(ctx, s.vis, "DELETE FROM "+quoteIdent(s.l.cfg.debtTable)+" WHERE slot = $1", s.l.cfg.slot); err != nil {
		return err
	}
	s.debt, s.owed, s.owedOverflow = false, nil, false
	s.l.holdForDebt(false)
	s.l.setFailure(nil)
	s.l.log.Warn("pgcdc: cleared the cache prefix the WAL bound owed", "prefix", s.l.m.Prefix())
	s.l.emit(Event{Kind: EventCleared})
	return nil
}

// loadDebt reads whether a Clear is owed (a predecessor may have incurred
// it and died): the invalidator then clears before anything else.
func (s *stream) loadDebt(ctx context.Context) error {
	rows, err := query(ctx, s.vis, "SELECT to_regclass($1) IS NOT NULL", quoteIdent(s.l.cfg.debtTable))
	if err != nil {
		return err
	}
	if rows[0][0] != "t" {
		return nil
	}
	rows, err = query(ctx, s.vis, "SELECT 1 FROM "+quoteIdent(s.l.cfg.debtTable)+" WHERE slot = $1", s.l.cfg.slot)
	if err != nil {
		return err
	}
	s.debt = len(rows) > 0
	s.l.holdForDebt(s.debt)
	s.clearWait, s.nextClear = s.l.cfg.minBackoff, time.Now()
	return nil
}

// waitVisible returns once the transactions of group are visible to every
// snapshot taken from now on. PostgreSQL writes a commit record, and a WAL
// sender may decode and send it, a moment before the transaction leaves
// the running set that snapshots consult: invalidating in that moment
// would let a reader start after the invalidation, still read the old row,
// and store it. So the listener checks that no xid of the group is running
// in a snapshot taken after their commit records arrived; the wait, when
// there is one, is that moment.
func (s *stream) waitVisible(ctx context.Context, group []batch) error {
	wait := 50 * time.Microsecond
	for {
		rows, err := query(ctx, s.vis, "SELECT pg_current_snapshot()::text")
		if err != nil {
			return err
		}
		snap, err := parseSnapshot(rows[0][0])
		if err != nil {
			return err
		}
		visible := true
		for _, b := range group {
			if len(b.tags) > 0 && snap.running(b.xid) {
				visible = false
				break
			}
		}
		if visible {
			return nil
		}
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
		wait = min(2*wait, time.Millisecond)
	}
}

// snapshot is what a pg_current_snapshot says of transactions: those
// listed in xip are running, and so is every transaction from xmax on
// (xmax is one past the newest transaction that had ended when the
// snapshot was taken). The newest transaction is the usual one to have
// written its commit record and not yet ended: it is at xmax, not in xip.
type snapshot struct {
	xmax uint32
	xip  map[uint32]bool
}

// parseSnapshot reads a snapshot's text form ("xmin:xmax:xip,xip,…").
// Its xids are 64-bit; the stream names transactions by their low 32
// bits, compared modulo 2³² as PostgreSQL compares them: two transactions
// in flight at once are never two billion xids apart.
func parseSnapshot(text string) (snapshot, error) {
	parts := strings.Split(text, ":")
	if len(parts) != 3 {
		return snapshot{}, fmt.Errorf("pgcdc: unexpected snapshot %q", text)
	}
	xmax, err := strconv.ParseUint(parts[1], 10, 64)
	if err != nil {
		return snapshot{}, fmt.Errorf("pgcdc: unexpected snapshot %q: %w", text, err)
	}
	snap := snapshot{xmax: uint32(xmax), xip: map[uint32]bool{}}
	if parts[2] == "" {
		return snap, nil
	}
	for _, x := range strings.Split(parts[2], ",") {
		v, err := strconv.ParseUint(x, 10, 64)
		if err != nil {
			return snapshot{}, fmt.Errorf("pgcdc: unexpected snapshot %q: %w", text, err)
		}
		snap.xip[uint32(v)] = true
	}
	return snap, nil
}

// running reports whether transaction xid was still running, hence
// invisible, when the snapshot was taken.
func (s snapshot) running(xid uint32) bool {
	return int32(xid-s.xmax) >= 0 || s.xip[xid]
}

// sendStatus confirms Processed to the server: the slot keeps WAL from
// there and a new session starts there.
// With ask it asks the server to reply at once.
func (s *stream) sendStatus(ask bool) error {
	p := s.l.Processed()
	if err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.repl, pglogrepl.StandbyStatusUpdate{WALWritePosition: p, ReplyRequested: ask}); err != nil {
		return fmt.Errorf("pgcdc: send status: %w", err)
	}
	if ask {
		s.askedAt = time.Now()
	}
	s.nextStatus = time.Now().Add(s.l.cfg.status)
	if p > s.confirmed {
		s.confirmed = p
		s.l.emit(Event{Kind: EventConfirmed, LSN: p})
	}
	return nil
}

func (s *stream) copyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		k, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("pgcdc: %w", err)
		}
		// The server has sent every commit before ServerWALEnd; between
		// transactions all of them have been invalidated, so the position
		// moves there once those are done (WAL that touched no published
		// table, skipped transactions), and the slot can let that WAL go.
		s.noteServerEnd(k.ServerWALEnd)
		if !s.inTx && k.ServerWALEnd > s.queued {
			if err := s.enqueue(ctx, batch{lsn: k.ServerWALEnd}); err != nil {
				return err
			}
		}
		if k.ReplyRequested {
			return s.sendStatus(false)
		}
	case pglogrepl.XLogDataByteID:
		x, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("pgcdc: %w", err)
		}
		s.noteServerEnd(x.ServerWALEnd)
		return s.logical(ctx, x.WALData)
	}
	return nil
}

func (s *stream) noteServerEnd(lsn LSN) {
	if uint64(lsn) > s.serverEnd.Load() {
		s.serverEnd.Store(uint64(lsn))
	}
}

func (s *stream) logical(ctx context.Context, data []byte) error {
	msg, err := pglogrepl.Parse(data)
	if err != nil {
		return fmt.Errorf("pgcdc: parse pgoutput message: %w", err)
	}
	switch msg := msg.(type) {
	case *pglogrepl.RelationMessage:
		return s.relation(ctx, msg)
	case *pglogrepl.BeginMessage:
		s.inTx, s.xid = true, msg.Xid
		s.tags, s.seen, s.entered, s.rowTags = s.tags[:0], map[string]bool{}, s.entered[:0], map[string]int{}
		s.changeTags = 0
	case *pglogrepl.InsertMessage:
		r, err := s.rel(msg.RelationID)
		if err != nil {
			return err
		}
		s.row(ctx, r, OpInsert, nil, msg.Tuple)
	case *pglogrepl.UpdateMessage:
		r, err := s.rel(msg.RelationID)
		if err != nil {
			return err
		}
		s.row(ctx, r, OpUpdate, msg.OldTuple, msg.NewTuple)
	case *pglogrepl.DeleteMessage:
		r, err := s.rel(msg.RelationID)
		if err != nil {
			return err
		}
		s.row(ctx, r, OpDelete, msg.OldTuple, nil)
	case *pglogrepl.TruncateMessage:
		for _, id := range msg.RelationIDs {
			r, err := s.rel(id)
			if err != nil {
				return err
			}
			s.add(gormplugin.ListTag(r.table), gormplugin.TableTag(r.table))
		}
	case *pglogrepl.CommitMessage:
		s.inTx = false
		return s.enqueue(ctx, batch{lsn: msg.TransactionEndLSN, commitTime: msg.CommitTime, xid: s.xid,
			tags: slices.Clone(s.tags), entered: slices.Clone(s.entered), clear: s.changeTags < 0})
	}
	return nil
}

func (s *stream) rel(id uint32) (*relation, error) {
	r, ok := s.rels[id]
	if !ok {
		// pgoutput always describes a relation before its first change.
		return nil, fmt.Errorf("pgcdc: a change of relation %d before its description", id)
	}
	return r, nil
}

// relation records how a table's rows map to tags. The primary key comes
// from the database unless a model names the table; it is read again on
// every description, which pgoutput sends again after a schema change.
func (s *stream) relation(ctx context.Context, msg *pglogrepl.RelationMessage) error {
	var pk []string
	if _, ok := s.l.models[gormplugin.TableTag(msg.Namespace+"."+msg.RelationName)]; !ok {
		rows, err := query(ctx, s.plain, `SELECT a.attname FROM pg_index i
			CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
			JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
			WHERE i.indrelid = $1::oid AND i.indisprimary ORDER BY k.ord`, fmt.Sprint(msg.RelationID))
		if err != nil {
			return err
		}
		for _, r := range rows {
			pk = append(pk, r[0])
		}
	}
	r, why := newRelation(msg, s.l.models, pk)
	if why != "" {
		if _, logged := s.l.unkeyedSeen.LoadOrStore(r.table, true); !logged {
			s.l.log.Warn("pgcdc: rows of "+msg.Namespace+"."+msg.RelationName+" cannot be identified", "why", why)
		}
	}
	s.rels[msg.RelationID] = r
	return nil
}

// row gathers the tags of one row change: the list tag, the row tags of
// the old and new keys, and the table tag where a key is unknown.
func (s *stream) row(ctx context.Context, r *relation, op Op, old, new *pglogrepl.TupleData) {
	if r.msg.RelationName == s.l.cfg.debtTable {
		return // the listener's own bookkeeping
	}
	s.add(gormplugin.ListTag(r.table))
	switch n := s.rowTags[r.table]; {
	case n < 0:
		// The table tag, added when the count reached the bound, covers
		// this row too.
	case n >= maxRowTags:
		s.add(gormplugin.TableTag(r.table))
		s.rowTags[r.table] = -1
	default:
		s.rowTags[r.table] = n + s.addRowTags(ctx, r, op, old, new)
	}
	// A row that enters a table's lists may enter lists with conjunction
	// tags, which do not depend on the list tag: the invalidator adds the
	// tags of the table's schemes once the commit is visible. (A row that
	// leaves a list needs nothing more: such lists depend on the row tags
	// of the rows they hold.)
	if new != nil && !slices.Contains(s.entered, r.table) {
		s.entered = append(s.entered, r.table)
	}
	if fn := s.l.cfg.changeTags; fn != nil && s.changeTags >= 0 {
		before := len(s.tags)
		s.add(fn(Change{Op: op, Schema: r.msg.Namespace, Table: r.msg.RelationName,
			Old: tupleValues(r.msg, old), New: tupleValues(r.msg, new)})...)
		if s.changeTags += len(s.tags) - before; s.changeTags > maxChangeTags {
			s.changeTags = -1 // the tags gathered so far stay: the Clear invalidates them first (owe)
		}
	}
}

// addRowTags adds the row tags of the old and new keys, or the table tag
// where a key is unknown, and returns how many row tags it added.
func (s *stream) addRowTags(ctx context.Context, r *relation, op Op, old, new *pglogrepl.TupleData) int {
	identified, added := true, 0
	if old != nil {
		tag, ok := r.rowTag(ctx, old)
		identified = identified && ok
		if ok {
			s.add(tag)
			added++
		}
	}
	if new != nil {
		tag, ok := r.rowTag(ctx, new)
		if ok {
			s.add(tag)
			added++
		} else if op == OpUpdate && old != nil {
			// An unchanged TOASTed key: the key did not change, and the
			// old tuple named it.
			ok = true
		}
		identified = identified && ok
	}
	if op == OpDelete && old == nil {
		identified = false
	}
	if !identified {
		s.add(gormplugin.TableTag(r.table))
	}
	return added
}

func (s *stream) add(tags ...string) {
	for _, t := range tags {
		if t == "" || s.seen[t] {
			continue
		}
		if !backends.IsPlainTag(t) {
			// No entry can depend on it; the plugin could not have
			// registered it either.
			s.l.log.Error("pgcdc: a tag starts with a reserved byte; no entry can depend on it, skipped", "tag", t)
			continue
		}
		s.seen[t] = true
		s.tags = append(s.tags, t)
	}
}

// invalidate invalidates tags, retrying with backoff until it succeeds or
// ctx ends; lsn is where the batch ends. covered reports that it gave up
// past the WAL bound, a durable debt (a Clear) taking its place.
func (s *stream) invalidate(ctx context.Context, tags []string, lsn LSN) (covered bool, err error) {
	backoff := s.l.cfg.minBackoff
	for attempt := 1; ; attempt++ {
		ictx, cancel := context.WithTimeout(ctx, s.l.cfg.invTimeout)
		_, err := s.l.m.InvalidateDependency(ictx, tags...)
		cancel()
		if err == nil {
			if attempt > 1 {
				s.l.setFailure(nil)
			}
			return false, nil
		}
		if errors.Is(err, depcache.ErrClosed) {
			return false, fmt.Errorf("pgcdc: %w", err)
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if attempt == 1 {
			s.l.log.Warn("pgcdc: invalidation failed; retrying, nothing past it is confirmed", "lsn", lsn, "tags", len(tags), "err", err)
		}
		s.l.setFailure(fmt.Errorf("pgcdc: invalidation of the commit at %s failed (attempt %d): %w", lsn, attempt, err))
		s.l.emit(Event{Kind: EventInvalidationFailed, LSN: lsn, Tags: tags, Attempt: attempt, Err: err})
		if s.overBound() {
			if err := s.incurDebt(ctx, lsn, ""); err != nil {
				return false, err
			}
			s.owe(tags)
			return true, nil
		}
		if !sleep(ctx, backoff) {
			return false, ctx.Err()
		}
		backoff = min(2*backoff, s.l.cfg.maxBackoff)
	}
}

// schemeTags returns, for every table the group's transactions inserted
// rows into or updated, the scheme tags (gormplugin.SchemeTag) of the
// table's conjunction schemes: every cached list with conjunction tags of
// that table depends on one of them. It reads the schemes after the
// commits are visible, as the plugin reads them after its COMMIT: a
// reader registers its scheme before its query runs, so a query that
// could have missed these rows registered it before this read. So the
// read cannot be kept from one batch to the next: a scheme registered
// since by a reader whose query missed these commits would be missing.
// (Reading a batch's tables concurrently was measured and dropped: with a
// local Redis it was slower than one read after the other, 167 µs against
// 148 µs for three tables, on two loaded cores.) A table whose schemes
// cannot be read gets its table tag, as in the plugin.
// Nothing is read where the backend keeps no sets (no conjunction tags).
func (s *stream) schemeTags(ctx context.Context, group []batch) map[string][]string {
	if _, ok := s.l.m.Backend().(backends.Sets); !ok {
		return nil
	}
	out := map[string][]string{}
	for _, b := range group {
		for _, table := range b.entered {
			if _, done := out[table]; done {
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, s.l.cfg.invTimeout)
			tags, err := gormplugin.SchemeTags(rctx, s.l.m, table)
			cancel()
			if err != nil {
				s.l.log.Warn("pgcdc: cannot read the table's conjunction schemes; invalidating its table tag", "table", table, "err", err)
				out[table] = []string{gormplugin.TableTag(table)}
				continue
			}
			out[table] = tags
		}
	}
	return out
}
