package main

import "time"

// User writes posts and comments.
type User struct {
	ID        uint      `json:"id"`
	Username  string    `json:"username" gorm:"size:64;uniqueIndex;not null"`
	Name      string    `json:"name" gorm:"size:200;not null"`
	Bio       string    `json:"bio,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Post belongs to its author, has comments (deleted with it by the
// database: ON DELETE CASCADE) and many tags through post_tags.
type Post struct {
	ID        uint      `json:"id"`
	AuthorID  uint      `json:"author_id" gorm:"index;not null"`
	Author    *User     `json:"author,omitempty"`
	Title     string    `json:"title" gorm:"size:200;not null"`
	Body      string    `json:"body,omitempty"`
	Tags      []Tag     `json:"tags" gorm:"many2many:post_tags;constraint:OnDelete:CASCADE"`
	Comments  []Comment `json:"comments,omitempty" gorm:"constraint:OnDelete:CASCADE"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Comment is a user's comment on a post.
type Comment struct {
	ID        uint      `json:"id"`
	PostID    uint      `json:"post_id" gorm:"index;not null"`
	AuthorID  uint      `json:"author_id" gorm:"not null"`
	Author    *User     `json:"author,omitempty"`
	Body      string    `json:"body"`
	CreatedAt time.Time `json:"created_at"`
}

// Tag labels posts.
type Tag struct {
	ID   uint   `json:"id"`
	Name string `json:"name" gorm:"size:64;uniqueIndex;not null"`
}

// models lists the tables, in creation order, for AutoMigrate.
var models = []any{&User{}, &Tag{}, &Post{}, &Comment{}}
