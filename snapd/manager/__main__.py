from snapd.manager.main import main

main()
