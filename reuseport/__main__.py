from reuseport.cli import main

main()
