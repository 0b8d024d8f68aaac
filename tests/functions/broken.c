// Does not compile: for the compile error path.
int main(void) {
    return undefined_variable
}
