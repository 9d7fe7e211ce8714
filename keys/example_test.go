package keys_test

import (
	"fmt"
	"time"

	"github.com/depcache/go-depcache/keys"
)

func ExampleOf() {
	fmt.Println(keys.Of(42, "bob", true, nil))
	fmt.Println(keys.Of(uint(42), 2.5, []byte("hi")))
	fmt.Println(keys.Of(time.Date(2024, 5, 1, 12, 0, 0, 0, time.FixedZone("CEST", 2*3600))))
	// Output:
	// v1|i:42|s:"bob"|true|nil
	// v1|u:42|f:2.5|b:6869
	// v1|t:2024-05-01T10:00:00Z
}

// Product is a GORM-style model: keyed by its primary key alone.
type Product struct {
	Model
	SKU string
}

// Subscription has a composite primary key.
type Subscription struct {
	UserID int    `gorm:"primaryKey"`
	Plan   string `gorm:"primaryKey"`
	Active bool
}

func ExampleOf_identity() {
	fmt.Println(keys.Of(Product{Model: Model{ID: 7}, SKU: "A-1"}))
	fmt.Println(keys.Of(&Subscription{UserID: 3, Plan: "pro:yearly"}))
	fmt.Println(keys.Of((*Product)(nil)))
	// Output:
	// v1|Product::7
	// v1|Subscription::3:pro\:yearly
	// v1|nil
}

// Region names its own identity.
type Region struct{ Code string }

func (r Region) CacheKey() string { return "Region::" + keys.FormatValue(r.Code) }

func ExampleCacheKeyer() {
	fmt.Println(keys.Of(Region{Code: "eu-west"}, 10))
	// Output: v1|Region::eu-west|i:10
}

// SearchArgs carries query parameters and, deliberately, no ID field: with
// one it would be keyed by the ID alone.
type SearchArgs struct {
	Query string
	Tags  []string
	Page  int
}

func ExampleOf_composite() {
	a := keys.Of(SearchArgs{Query: "go", Tags: []string{"db"}, Page: 1})
	b := keys.Of(map[string]any{"page": 1, "query": "go"})
	c := keys.Of(map[string]any{"query": "go", "page": 1})
	fmt.Println(len(a), a[:5], b == c)
	// Output: 37 v1|h: true
}

func ExampleOfErr() {
	_, err := keys.OfErr("report", func() {})
	fmt.Println(err)
	// Output: argument 1: keys: unsupported value: non-nil func (func())
}

func ExampleFormatKey() {
	fmt.Println("users::" + keys.FormatValue(42))
	fmt.Println("files::" + keys.FormatValue(`c:\tmp`))
	fmt.Println("tags::" + keys.FormatValue("*"))
	fmt.Println("members::" + keys.FormatKey(3, "admin"))
	// Output:
	// users::42
	// files::c\:\\tmp
	// tags::\*
	// members::3:admin
}
