package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/depcache/go-depcache/depcache"
)

// perPage is the size of a page of GET /posts.
const perPage = 10

// PostQuery selects a page of posts. It has no ID field: depcache keys a
// struct with an ID by that field alone.
type PostQuery struct {
	Page   int    // from 1
	Author uint   // 0: every author
	Tag    string // "": every tag
}

// PostPage is one page of posts, newest first, with authors and tags but
// without their bodies.
type PostPage struct {
	Page    int    `json:"page"`
	PerPage int    `json:"per_page"`
	Total   int64  `json:"total"`
	Posts   []Post `json:"posts"`
}

// UserPage is a user with their latest posts.
type UserPage struct {
	User       User   `json:"user"`
	TotalPosts int64  `json:"total_posts"`
	Posts      []Post `json:"posts"`
}

// store holds the blog's queries. The reads are memoized: each runs its
// GORM queries with db.WithContext(ctx), so the plugin tags the cached
// result with every table and row it read, and every write through GORM
// (below) invalidates them after it commits. Nothing here names a cache
// dependency by hand.
type store struct {
	db *gorm.DB

	ListPosts func(context.Context, PostQuery) (PostPage, error)
	GetPost   func(context.Context, uint) (Post, error)
	GetUser   func(context.Context, uint) (UserPage, error)
}

func newStore(db *gorm.DB, m *depcache.Manager) *store {
	s := &store{db: db}
	// Method values need KeyName (they all report one symbol); it also keeps
	// keys stable when the code moves. Not-found answers are cached too: a
	// lookup by key depends on the row's tag even when it finds nothing, so
	// creating the row invalidates the cached 404.
	s.ListPosts = depcache.Memoize(s.listPosts, depcache.Using(m), depcache.KeyName("blog.listPosts"))
	s.GetPost = depcache.Memoize(s.getPost, depcache.Using(m), depcache.KeyName("blog.getPost"),
		depcache.CacheErrors(gorm.ErrRecordNotFound))
	s.GetUser = depcache.Memoize(s.getUser, depcache.Using(m), depcache.KeyName("blog.getUser"),
		depcache.CacheErrors(gorm.ErrRecordNotFound))
	return s
}

func tagsByName(db *gorm.DB) *gorm.DB { return db.Order("tags.name") }

// listPosts reads a page of posts: a count, the page, and the authors and
// tags of its posts (three more queries).
func (s *store) listPosts(ctx context.Context, q PostQuery) (PostPage, error) {
	q.Page = max(q.Page, 1)
	filtered := func() *gorm.DB {
		tx := s.db.WithContext(ctx).Model(&Post{})
		if q.Author != 0 {
			tx = tx.Where("posts.author_id = ?", q.Author)
		}
		if q.Tag != "" {
			tx = tx.Joins("JOIN post_tags ON post_tags.post_id = posts.id").
				Joins("JOIN tags ON tags.id = post_tags.tag_id").
				Where("tags.name = ?", q.Tag)
		}
		return tx
	}
	page := PostPage{Page: q.Page, PerPage: perPage, Posts: []Post{}}
	if err := filtered().Count(&page.Total).Error; err != nil {
		return PostPage{}, fmt.Errorf("count posts: %w", err)
	}
	err := filtered().Omit("body").Preload("Author").Preload("Tags", tagsByName).
		Order("posts.id DESC").Limit(perPage).Offset((q.Page - 1) * perPage).
		Find(&page.Posts).Error
	if err != nil {
		return PostPage{}, fmt.Errorf("list posts: %w", err)
	}
	return page, nil
}

// getPost reads a post with its author, tags, and comments with their
// authors: five queries.
func (s *store) getPost(ctx context.Context, id uint) (Post, error) {
	var p Post
	err := s.db.WithContext(ctx).
		Preload("Author").
		Preload("Tags", tagsByName).
		Preload("Comments", func(db *gorm.DB) *gorm.DB { return db.Order("comments.id") }).
		Preload("Comments.Author").
		First(&p, id).Error
	return p, err
}

// getUser reads a user and calls the memoized ListPosts for their latest
// posts: the user page inherits the list's dependencies, whether the list
// was a hit or a miss.
func (s *store) getUser(ctx context.Context, id uint) (UserPage, error) {
	var u User
	if err := s.db.WithContext(ctx).First(&u, id).Error; err != nil {
		return UserPage{}, err
	}
	latest, err := s.ListPosts(ctx, PostQuery{Page: 1, Author: id})
	if err != nil {
		return UserPage{}, err
	}
	return UserPage{User: u, TotalPosts: latest.Total, Posts: latest.Posts}, nil
}

// inputError is a request the store refuses (HTTP 400).
type inputError struct{ msg string }

func (e *inputError) Error() string { return e.msg }

func invalid(format string, args ...any) error { return &inputError{fmt.Sprintf(format, args...)} }

// PostInput is the body of POST /posts and PUT /posts/{id}. On PUT, absent
// fields stay unchanged ("tags": [] removes every tag); author_id is
// ignored.
type PostInput struct {
	AuthorID uint     `json:"author_id"`
	Title    *string  `json:"title"`
	Body     *string  `json:"body"`
	Tags     []string `json:"tags"`
}

// CommentInput is the body of POST /posts/{id}/comments.
type CommentInput struct {
	AuthorID uint   `json:"author_id"`
	Body     string `json:"body"`
}

// The writes below go through GORM only. The plugin invalidates what each
// touched (row tags, the table's list tag, and for a delete the tables that
// cascade from it) once the transaction has committed.

func (s *store) CreatePost(ctx context.Context, in PostInput) (Post, error) {
	if in.Title == nil || strings.TrimSpace(*in.Title) == "" {
		return Post{}, invalid("title is required")
	}
	var out Post
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := exists(tx, &User{}, in.AuthorID, "author"); err != nil {
			return err
		}
		tags, err := findOrCreateTags(tx, in.Tags)
		if err != nil {
			return err
		}
		p := Post{AuthorID: in.AuthorID, Title: strings.TrimSpace(*in.Title), Tags: tags}
		if in.Body != nil {
			p.Body = *in.Body
		}
		if err := tx.Create(&p).Error; err != nil {
			return err
		}
		return tx.Preload("Author").Preload("Tags", tagsByName).First(&out, p.ID).Error
	})
	return out, err
}

func (s *store) UpdatePost(ctx context.Context, id uint, in PostInput) (Post, error) {
	if in.Title != nil && strings.TrimSpace(*in.Title) == "" {
		return Post{}, invalid("title cannot be empty")
	}
	var out Post
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var p Post
		if err := tx.First(&p, id).Error; err != nil {
			return err
		}
		changes := map[string]any{"updated_at": time.Now()}
		if in.Title != nil {
			changes["title"] = strings.TrimSpace(*in.Title)
		}
		if in.Body != nil {
			changes["body"] = *in.Body
		}
		if err := tx.Model(&p).Updates(changes).Error; err != nil {
			return err
		}
		if in.Tags != nil {
			tags, err := findOrCreateTags(tx, in.Tags)
			if err != nil {
				return err
			}
			if err := tx.Model(&p).Association("Tags").Replace(tags); err != nil {
				return err
			}
		}
		return tx.Preload("Author").Preload("Tags", tagsByName).First(&out, id).Error
	})
	return out, err
}

// DeletePost deletes a post; the database deletes its comments and tag
// links (ON DELETE CASCADE), and the plugin, which knows the relationships,
// invalidates what read those tables.
func (s *store) DeletePost(ctx context.Context, id uint) error {
	res := s.db.WithContext(ctx).Delete(&Post{}, id)
	if res.Error == nil && res.RowsAffected == 0 {
		return gorm.ErrRecordNotFound
	}
	return res.Error
}

func (s *store) AddComment(ctx context.Context, postID uint, in CommentInput) (Comment, error) {
	if strings.TrimSpace(in.Body) == "" {
		return Comment{}, invalid("body is required")
	}
	var out Comment
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.First(&Post{}, postID).Error; err != nil {
			return err
		}
		if err := exists(tx, &User{}, in.AuthorID, "author"); err != nil {
			return err
		}
		c := Comment{PostID: postID, AuthorID: in.AuthorID, Body: in.Body}
		if err := tx.Create(&c).Error; err != nil {
			return err
		}
		return tx.Preload("Author").First(&out, c.ID).Error
	})
	return out, err
}

func (s *store) DeleteComment(ctx context.Context, id uint) error {
	res := s.db.WithContext(ctx).Delete(&Comment{}, id)
	if res.Error == nil && res.RowsAffected == 0 {
		return gorm.ErrRecordNotFound
	}
	return res.Error
}

// exists reports an inputError when the row id of model's table is missing.
func exists(tx *gorm.DB, model any, id uint, what string) error {
	var n int64
	if err := tx.Model(model).Where("id = ?", id).Count(&n).Error; err != nil {
		return err
	}
	if n == 0 {
		return invalid("no such %s: %d", what, id)
	}
	return nil
}

// findOrCreateTags returns the tags named, creating the missing ones.
func findOrCreateTags(tx *gorm.DB, names []string) ([]Tag, error) {
	var clean []string
	for _, n := range names {
		n = strings.ToLower(strings.TrimSpace(n))
		if n == "" || slices.Contains(clean, n) {
			continue
		}
		if len(n) > 64 {
			return nil, invalid("tag too long: %q", n)
		}
		clean = append(clean, n)
	}
	tags := make([]Tag, 0, len(clean))
	for _, n := range clean {
		t := Tag{Name: n}
		if err := tx.Where(Tag{Name: n}).FirstOrCreate(&t).Error; err != nil {
			return nil, fmt.Errorf("tag %q: %w", n, err)
		}
		tags = append(tags, t)
	}
	return tags, nil
}

// notFound reports whether err means a missing row (HTTP 404).
func notFound(err error) bool { return errors.Is(err, gorm.ErrRecordNotFound) }
