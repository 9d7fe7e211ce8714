package keys_test

import (
	"strconv"
	"time"
)

// Types shared by the tests, the vectors and the examples.

type ValKeyer struct{ N int }

func (k ValKeyer) CacheKey() string { return "ValKeyer::" + strconv.Itoa(k.N) }

type PtrKeyer struct{ N int }

func (k *PtrKeyer) CacheKey() string { return "PtrKeyer::" + strconv.Itoa(k.N) }

// RawKeyer returns whatever it holds, to test identities unfit for a key.
type RawKeyer string

func (k RawKeyer) CacheKey() string { return string(k) }

// KeyerWithID: rule 1 wins over the ID field.
type KeyerWithID struct{ ID int }

func (KeyerWithID) CacheKey() string { return "custom" }

type Article struct {
	ID   int
	Slug string `depcache:"key"`
}

type Account struct {
	ID   int
	Code string `gorm:"column:code;primaryKey"`
}

type LegacyAccount struct {
	ID   int
	Code string `gorm:"size:8; PRIMARY_KEY"`
}

type NotPK struct {
	ID   int
	Code string `gorm:"primaryKey:false"`
}

type Membership struct {
	UserID  int    `gorm:"primaryKey"`
	GroupID string `gorm:"primaryKey"`
	Role    string
}

// Model mirrors gorm.Model.
type Model struct {
	ID        uint `gorm:"primarykey"`
	CreatedAt time.Time
	UpdatedAt time.Time
	DeletedAt *time.Time `gorm:"index"`
}

type User struct {
	Model
	Name string
}

type PtrModelUser struct {
	*Model
	Name string
}

type Legacy struct {
	Id   string
	Note string
}

type thing struct{ ID int }

type Page[T any] struct {
	ID    int
	Items []T
}

type Filter struct {
	Owner  User
	Status string
	Tags   []string
	Limit  *int
	Skip   func() `depcache:"-"`
}

type Filter2 struct {
	Owner  User
	Status string
	Tags   []string
	Limit  *int
}

type Node struct {
	Name string
	Next *Node
}

type Pair struct{ A, B string }

type Opaque struct{ secret int }

type WithFunc struct {
	Name string
	Fn   func()
}
