package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"

	"gorm.io/gorm"
)

// seedFile is the format of testdata/blog/seed.json. Posts and comments
// name their authors by username; ids are assigned by the database.
type seedFile struct {
	Users []struct {
		Username string `json:"username"`
		Name     string `json:"name"`
		Bio      string `json:"bio"`
	} `json:"users"`
	Posts []struct {
		Author   string   `json:"author"`
		Title    string   `json:"title"`
		Body     string   `json:"body"`
		Tags     []string `json:"tags"`
		Comments []struct {
			Author string `json:"author"`
			Body   string `json:"body"`
		} `json:"comments"`
	} `json:"posts"`
}

// migrate creates the tables.
func migrate(db *gorm.DB) error {
	if err := db.AutoMigrate(models...); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// seed loads the seed file into an empty database, in one transaction. A
// database that already has users is left alone.
func seed(ctx context.Context, db *gorm.DB, path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("seed: %w (run from the repository root, or pass -seed)", err)
	}
	var sf seedFile
	if err := json.Unmarshal(raw, &sf); err != nil {
		return fmt.Errorf("seed %s: %w", path, err)
	}
	var n int64
	if err := db.WithContext(ctx).Model(&User{}).Count(&n).Error; err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	if n > 0 {
		return nil
	}
	return db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		users := map[string]uint{}
		for _, su := range sf.Users {
			u := User{Username: su.Username, Name: su.Name, Bio: su.Bio}
			if err := tx.Create(&u).Error; err != nil {
				return fmt.Errorf("seed user %s: %w", su.Username, err)
			}
			users[su.Username] = u.ID
		}
		author := func(name string) (uint, error) {
			if id, ok := users[name]; ok {
				return id, nil
			}
			return 0, fmt.Errorf("seed %s: unknown user %q", path, name)
		}
		for _, sp := range sf.Posts {
			aid, err := author(sp.Author)
			if err != nil {
				return err
			}
			tags, err := findOrCreateTags(tx, sp.Tags)
			if err != nil {
				return err
			}
			p := Post{AuthorID: aid, Title: sp.Title, Body: sp.Body, Tags: tags}
			for _, sc := range sp.Comments {
				cid, err := author(sc.Author)
				if err != nil {
					return err
				}
				p.Comments = append(p.Comments, Comment{AuthorID: cid, Body: sc.Body})
			}
			if err := tx.Create(&p).Error; err != nil {
				return fmt.Errorf("seed post %q: %w", sp.Title, err)
			}
		}
		return nil
	})
}

// Sizes of the data -load generates.
const (
	genUsers           = 200
	genPosts           = 3000
	genCommentsPerPost = 6 // on average
)

var genTags = []string{
	"go", "sql", "redis", "caching", "gorm", "sqlite", "postgres", "mysql",
	"testing", "performance", "concurrency", "http", "json", "design",
	"operations", "security", "tools", "release", "tutorial", "opinion",
}

// generate adds a few thousand rows of made-up users, posts, tags and
// comments, so that a page costs the database some work.
func generate(ctx context.Context, db *gorm.DB) error {
	r := rand.New(rand.NewPCG(1, 2))
	return db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		tags, err := findOrCreateTags(tx, genTags)
		if err != nil {
			return err
		}
		users := make([]User, genUsers)
		for i := range users {
			users[i] = User{
				Username: fmt.Sprintf("gen%03d", i),
				Name:     fmt.Sprintf("Generated User %d", i),
				Bio:      lorem(r, 20),
			}
		}
		if err := tx.CreateInBatches(users, 500).Error; err != nil {
			return fmt.Errorf("generate users: %w", err)
		}
		posts := make([]Post, genPosts)
		for i := range posts {
			p := Post{
				AuthorID: users[r.IntN(len(users))].ID,
				Title:    fmt.Sprintf("Generated post %d: %s", i, lorem(r, 5)),
				Body:     lorem(r, 120),
			}
			for _, j := range r.Perm(len(tags))[:1+r.IntN(3)] {
				p.Tags = append(p.Tags, tags[j])
			}
			posts[i] = p
		}
		if err := tx.CreateInBatches(posts, 500).Error; err != nil {
			return fmt.Errorf("generate posts: %w", err)
		}
		var comments []Comment
		for _, p := range posts {
			for range r.IntN(2*genCommentsPerPost + 1) {
				comments = append(comments, Comment{
					PostID:   p.ID,
					AuthorID: users[r.IntN(len(users))].ID,
					Body:     lorem(r, 30),
				})
			}
		}
		if err := tx.CreateInBatches(comments, 1000).Error; err != nil {
			return fmt.Errorf("generate comments: %w", err)
		}
		return nil
	})
}

var words = []string{
	"cache", "tag", "row", "list", "query", "epoch", "stamp", "commit",
	"invalidate", "redis", "table", "page", "fresh", "stale", "read", "write",
	"latency", "hit", "miss", "entry", "fill", "lookup", "key", "value",
}

func lorem(r *rand.Rand, n int) string {
	b := make([]byte, 0, n*8)
	for i := range n {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, words[r.IntN(len(words))]...)
	}
	return string(b)
}
