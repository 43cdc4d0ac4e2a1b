module github.com/walletsync/walletsync

go 1.26
