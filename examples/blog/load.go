package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/depcache/go-depcache/depcache"
)

// loadMode generates data, then drives two servers on the same database in
// turn, one cached and one with a disabled manager, and compares them.
func loadMode(ctx context.Context, in *infra, o options, stdout io.Writer, log *slog.Logger) (err error) {
	cached, err := newApp(in, "blog", true, log)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, cached.Close()) }()
	if err := cached.prepare(ctx, o.seed); err != nil {
		return err
	}
	var posts int64
	if err := cached.db.WithContext(ctx).Model(&Post{}).Count(&posts).Error; err != nil {
		return err
	}
	if posts < genPosts {
		fmt.Fprintf(stdout, "load: generating %d users, %d posts, about %d comments…\n", genUsers, genPosts, genPosts*genCommentsPerPost)
		start := time.Now()
		if err := generate(ctx, cached.db); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "load: generated in %v\n", time.Since(start).Round(time.Millisecond))
	}
	tg, err := loadTargets(ctx, cached)
	if err != nil {
		return err
	}
	uncached, err := newApp(in, "blog-uncached", false, log)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, uncached.Close()) }()

	fmt.Fprintf(stdout, "load: database %s; cache %s\n", in.dbDesc, in.cacheDesc)
	fmt.Fprintf(stdout, "load: %d posts, %d users; %d readers, %d writers (one write every %v each); %v per run after %v of warm-up\n",
		len(tg.posts), len(tg.users), o.readers, o.writers, o.interval, o.duration, warmup)
	var results []loadResult
	for _, run := range []struct {
		name string
		a    *app
	}{{"cached", cached}, {"uncached", uncached}} {
		srv, err := startServer("127.0.0.1:0", run.a.handler)
		if err != nil {
			return err
		}
		warm := o
		warm.duration = warmup
		drive(ctx, srv.URL, run.a.m, tg, warm)
		res := drive(ctx, srv.URL, run.a.m, tg, o)
		res.name = run.name
		if err := srv.Shutdown(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		results = append(results, res)
	}

	fmt.Fprintf(stdout, "\n%-9s %10s %9s %9s %10s %7s %7s\n", "", "reads/s", "p50", "p99", "hit ratio", "writes", "errors")
	failed := 0
	for _, r := range results {
		ratio := "-"
		if r.stats.Hits+r.stats.Misses > 0 {
			ratio = fmt.Sprintf("%.1f%%", 100*r.stats.HitRatio())
		}
		fmt.Fprintf(stdout, "%-9s %10.0f %9s %9s %10s %7d %7d\n",
			r.name, r.readsPerSec(), fmtDur(r.p50), fmtDur(r.p99), ratio, r.writes, r.errors)
		failed += r.errors
	}
	c, u := results[0], results[1]
	fmt.Fprintf(stdout, "\nspeedup with the cache: %.1fx reads/s; p50 %.1fx lower, p99 %.1fx lower\n",
		c.readsPerSec()/u.readsPerSec(), float64(u.p50)/float64(c.p50), float64(u.p99)/float64(c.p99))
	if failed > 0 {
		return fmt.Errorf("load: %d requests failed", failed)
	}
	return nil
}

// warmup is how long each run's traffic goes on before it is measured.
const warmup = time.Second

// targets are what the load's requests name.
type targets struct {
	posts []uint
	users []uint
	tags  []string
}

func loadTargets(ctx context.Context, a *app) (targets, error) {
	var tg targets
	db := a.db.WithContext(ctx)
	if err := db.Model(&Post{}).Order("id").Pluck("id", &tg.posts).Error; err != nil {
		return tg, err
	}
	if err := db.Model(&User{}).Order("id").Pluck("id", &tg.users).Error; err != nil {
		return tg, err
	}
	if err := db.Model(&Tag{}).Order("name").Pluck("name", &tg.tags).Error; err != nil {
		return tg, err
	}
	if len(tg.posts) < 2 || len(tg.users) < 2 || len(tg.tags) == 0 {
		return tg, errors.New("load: not enough data")
	}
	// Popularity follows a Zipf law over a shuffled order, so that the hot
	// posts are not all the newest.
	r := rand.New(rand.NewPCG(3, 4))
	r.Shuffle(len(tg.posts), func(i, j int) { tg.posts[i], tg.posts[j] = tg.posts[j], tg.posts[i] })
	return tg, nil
}

type loadResult struct {
	name          string
	elapsed       time.Duration
	reads, writes int
	errors        int
	p50, p99      time.Duration
	stats         depcache.Stats // the manager's counters during the run
}

func (r loadResult) readsPerSec() float64 { return float64(r.reads) / r.elapsed.Seconds() }

// drive runs o.readers readers and o.writers writers against base for
// o.duration. Requests in flight at the end complete and count, as the
// elapsed time includes them: cancelling them would make the server log
// errors.
func drive(ctx context.Context, base string, m *depcache.Manager, tg targets, o options) loadResult {
	end := time.Now().Add(o.duration)
	var reads, writes, errs atomic.Int64
	// A run lasts o.duration and, past it, until the floors are met, so that
	// a slow machine still makes the reads and writes a test relies on.
	going := func() bool {
		return time.Now().Before(end) || reads.Load() < int64(o.minReads) || writes.Load() < int64(o.minWrites)
	}
	transport := &http.Transport{MaxIdleConnsPerHost: o.readers + o.writers}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport}

	before := m.Stats()
	latencies := make([][]time.Duration, o.readers)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range o.readers {
		wg.Go(func() {
			latencies[i] = reader(ctx, going, client, base, tg, uint64(i), &reads, &errs)
		})
	}
	for i := range o.writers {
		wg.Go(func() {
			writer(ctx, going, client, base, tg, o.interval, uint64(i), &writes, &errs)
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	after := m.Stats()
	all := slices.Concat(latencies...)
	slices.Sort(all)
	res := loadResult{
		elapsed: elapsed,
		reads:   len(all),
		writes:  int(writes.Load()),
		errors:  int(errs.Load()),
		stats: depcache.Stats{
			Hits:   after.Hits - before.Hits,
			Misses: after.Misses - before.Misses,
		},
	}
	if len(all) > 0 {
		res.p50 = all[len(all)/2]
		res.p99 = all[min(len(all)-1, len(all)*99/100)]
	}
	return res
}

// reader sends reads back to back while going reports true: post pages,
// front-page pages, tag lists and user pages, popular ones more often. It
// returns the latency of each read that completed.
func reader(ctx context.Context, going func() bool, c *http.Client, base string, tg targets, seed uint64, reads, errs *atomic.Int64) []time.Duration {
	r := rand.New(rand.NewPCG(seed, 11))
	posts := rand.NewZipf(r, 1.2, 1, uint64(len(tg.posts)-1))
	users := rand.NewZipf(r, 1.1, 1, uint64(len(tg.users)-1))
	pages := rand.NewZipf(r, 1.5, 1, 49)
	var lat []time.Duration
	for ctx.Err() == nil && going() {
		var path string
		switch x := r.IntN(100); {
		case x < 60:
			path = "/posts/" + strconv.Itoa(int(tg.posts[posts.Uint64()]))
		case x < 80:
			path = "/posts?page=" + strconv.Itoa(1+int(pages.Uint64()))
		case x < 90:
			path = "/posts?tag=" + tg.tags[r.IntN(len(tg.tags))]
		default:
			path = "/users/" + strconv.Itoa(int(tg.users[users.Uint64()]))
		}
		t0 := time.Now()
		status, err := send(ctx, c, "GET", base+path, nil)
		d := time.Since(t0)
		switch {
		case ctx.Err() != nil:
			return lat
		case err != nil || status != http.StatusOK:
			errs.Add(1)
		default:
			reads.Add(1)
			lat = append(lat, d)
		}
	}
	return lat
}

// writer writes every interval: comments on popular posts, title edits,
// new posts, and deletes of its own comments, while going reports true.
func writer(ctx context.Context, going func() bool, c *http.Client, base string, tg targets, interval time.Duration, seed uint64, writes, errs *atomic.Int64) {
	r := rand.New(rand.NewPCG(seed, 13))
	posts := rand.NewZipf(r, 1.1, 1, uint64(len(tg.posts)-1))
	var mine []uint // comments this writer created
	for n := 0; ctx.Err() == nil && going(); n++ {
		post := strconv.Itoa(int(tg.posts[posts.Uint64()]))
		author := tg.users[r.IntN(len(tg.users))]
		var (
			status int
			want   = http.StatusOK
			err    error
		)
		switch x := r.IntN(100); {
		case x < 55 || (x >= 90 && len(mine) == 0):
			var cm Comment
			status, err = send(ctx, c, "POST", base+"/posts/"+post+"/comments",
				CommentInput{AuthorID: author, Body: fmt.Sprintf("load comment %d", n)}, &cm)
			want = http.StatusCreated
			if err == nil && status == want {
				mine = append(mine, cm.ID)
			}
		case x < 80:
			title := fmt.Sprintf("Edited by the load, %d", n)
			status, err = send(ctx, c, "PUT", base+"/posts/"+post, PostInput{Title: &title})
		case x < 90:
			title := fmt.Sprintf("New post from the load, %d", n)
			status, err = send(ctx, c, "POST", base+"/posts",
				PostInput{AuthorID: author, Title: &title, Tags: []string{tg.tags[r.IntN(len(tg.tags))]}})
			want = http.StatusCreated
		default:
			i := r.IntN(len(mine))
			status, err = send(ctx, c, "DELETE", base+"/comments/"+strconv.Itoa(int(mine[i])), nil)
			want = http.StatusNoContent
			mine = slices.Delete(mine, i, i+1)
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil || status != want:
			errs.Add(1)
		default:
			writes.Add(1)
		}
		if pause := interval; pause > 0 && going() {
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// send makes a request with an optional JSON body and decodes the reply
// into dst[0] when given; it always reads the body to the end.
func send(ctx context.Context, c *http.Client, method, url string, body any, dst ...any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if len(dst) > 0 && resp.StatusCode < 300 {
		if err := json.NewDecoder(resp.Body).Decode(dst[0]); err != nil {
			return resp.StatusCode, err
		}
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%dµs", d.Microseconds())
	}
}
