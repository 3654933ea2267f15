from fingerprints.cli import main

main()
