package main

import (
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/depcache/go-depcache/depcache"
)

// server is the blog's HTTP API. Reads call the store's memoized functions;
// writes call its GORM writes and never touch the cache.
type server struct {
	store *store
	m     *depcache.Manager
	log   *slog.Logger
}

func newHandler(st *store, m *depcache.Manager, log *slog.Logger) http.Handler {
	s := &server{store: st, m: m, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.home)
	mux.HandleFunc("GET /posts", s.listPosts)
	mux.HandleFunc("GET /posts/{id}", s.getPost)
	mux.HandleFunc("POST /posts", s.createPost)
	mux.HandleFunc("PUT /posts/{id}", s.updatePost)
	mux.HandleFunc("DELETE /posts/{id}", s.deletePost)
	mux.HandleFunc("POST /posts/{id}/comments", s.addComment)
	mux.HandleFunc("DELETE /comments/{id}", s.deleteComment)
	mux.HandleFunc("GET /users/{id}", s.getUser)
	mux.HandleFunc("GET /debug/cache", s.cacheStats)
	return withXCache(mux)
}

// withXCache tracks the memoized calls each request makes and sets
// X-Cache: "hit" when every one of them was served from the cache, "miss"
// otherwise (a write reads nothing from the cache: it is a miss).
func withXCache(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, trace := depcache.Track(r.Context())
		next.ServeHTTP(&xcacheWriter{ResponseWriter: w, trace: trace}, r.WithContext(ctx))
	})
}

type xcacheWriter struct {
	http.ResponseWriter
	trace *depcache.Trace
	done  bool
}

func (w *xcacheWriter) WriteHeader(code int) {
	if !w.done {
		w.done = true
		v := "miss"
		if w.trace.String() == "hit" {
			v = "hit"
		}
		w.Header().Set("X-Cache", v)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *xcacheWriter) Write(b []byte) (int, error) {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *xcacheWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *server) listPosts(w http.ResponseWriter, r *http.Request) {
	q := PostQuery{Page: 1, Tag: r.URL.Query().Get("tag")}
	if v := r.URL.Query().Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100000 {
			s.fail(w, invalid("bad page %q", v))
			return
		}
		q.Page = n
	}
	if v := r.URL.Query().Get("author"); v != "" {
		id, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			s.fail(w, invalid("bad author %q", v))
			return
		}
		q.Author = uint(id)
	}
	page, err := s.store.ListPosts(r.Context(), q)
	s.reply(w, http.StatusOK, page, err)
}

func (s *server) getPost(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	p, err := s.store.GetPost(r.Context(), id)
	s.reply(w, http.StatusOK, p, err)
}

func (s *server) getUser(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	u, err := s.store.GetUser(r.Context(), id)
	s.reply(w, http.StatusOK, u, err)
}

func (s *server) createPost(w http.ResponseWriter, r *http.Request) {
	var in PostInput
	if !s.decode(w, r, &in) {
		return
	}
	p, err := s.store.CreatePost(r.Context(), in)
	s.reply(w, http.StatusCreated, p, err)
}

func (s *server) updatePost(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var in PostInput
	if !s.decode(w, r, &in) {
		return
	}
	p, err := s.store.UpdatePost(r.Context(), id, in)
	s.reply(w, http.StatusOK, p, err)
}

func (s *server) deletePost(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	s.reply(w, http.StatusNoContent, nil, s.store.DeletePost(r.Context(), id))
}

func (s *server) addComment(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var in CommentInput
	if !s.decode(w, r, &in) {
		return
	}
	c, err := s.store.AddComment(r.Context(), id, in)
	s.reply(w, http.StatusCreated, c, err)
}

func (s *server) deleteComment(w http.ResponseWriter, r *http.Request) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	s.reply(w, http.StatusNoContent, nil, s.store.DeleteComment(r.Context(), id))
}

// CacheStats is the body of GET /debug/cache.
type CacheStats struct {
	Hits          uint64  `json:"hits"`
	Misses        uint64  `json:"misses"`
	Sets          uint64  `json:"sets"`
	Invalidations uint64  `json:"invalidations"`
	Errors        uint64  `json:"errors"`
	HitRatio      float64 `json:"hit_ratio"`
}

func (s *server) cacheStats(w http.ResponseWriter, r *http.Request) {
	st := s.m.Stats()
	s.reply(w, http.StatusOK, CacheStats{
		Hits: st.Hits, Misses: st.Misses, Sets: st.Sets,
		Invalidations: st.Invalidations, Errors: st.Errors, HitRatio: st.HitRatio(),
	}, nil)
}

var homePage = template.Must(template.New("home").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>depcache blog</title></head>
<body>
<h1>depcache blog</h1>
<p>{{.Total}} posts. JSON: <a href="/posts">/posts</a>, <a href="/debug/cache">/debug/cache</a>.</p>
<ul>
{{range .Posts}}<li><a href="/posts/{{.ID}}">{{.Title}}</a>{{with .Author}} by <a href="/users/{{.ID}}">{{.Name}}</a>{{end}}{{range .Tags}} <a href="/posts?tag={{.Name}}">#{{.Name}}</a>{{end}}</li>
{{end}}</ul>
</body></html>
`))

func (s *server) home(w http.ResponseWriter, r *http.Request) {
	page, err := s.store.ListPosts(r.Context(), PostQuery{Page: 1})
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := homePage.Execute(w, page); err != nil {
		s.log.Error("blog: render home page", "err", err)
	}
}

func (s *server) pathID(w http.ResponseWriter, r *http.Request) (uint, bool) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 32)
	if err != nil {
		s.fail(w, invalid("bad id %q", r.PathValue("id")))
		return 0, false
	}
	return uint(id), true
}

func (s *server) decode(w http.ResponseWriter, r *http.Request, dst any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		s.fail(w, invalid("bad JSON body: %v", err))
		return false
	}
	return true
}

func (s *server) reply(w http.ResponseWriter, status int, v any, err error) {
	if err != nil {
		s.fail(w, err)
		return
	}
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	writeJSON(w, status, v)
}

func (s *server) fail(w http.ResponseWriter, err error) {
	var bad *inputError
	switch {
	case notFound(err):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
	case errors.As(err, &bad):
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": bad.msg})
	case errors.Is(err, context.Canceled):
		// The client went away (or the server is shutting down).
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "canceled"})
	default:
		s.log.Error("blog: request failed", "err", err)
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal error"})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
